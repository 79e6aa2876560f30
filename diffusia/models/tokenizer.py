"""Stable Diffusion's CLIP tokenizer, built offline from the BPE file that open-clip-torch ships."""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from diffusia.errors import DiffusiaError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise DiffusiaError("the CLIP BPE vocabulary is missing: run `pip install --no-deps open-clip-torch==3.3.0`")
    path = Path(spec.submodule_search_locations[0]) / BPE_FILE
    if not path.is_file():
        raise DiffusiaError(f"{path} not found: reinstall with `pip install --no-deps open-clip-torch==3.3.0`")
    return path


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The 49,408-token CLIP vocabulary and its 48,894 merges, exactly as OpenAI's simple_tokenizer builds them."""
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


EOS = "<|endoftext|>"


def write_clip_tokenizer(folder: str | Path, pad_token: str = EOS) -> Path:
    """Write a transformers `CLIPTokenizer` folder (vocab.json, merges.txt, configs) equal to SD v1.5's; SD 2.x and
    SDXL's second tokenizer pad with "!" instead of the end token."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        bos_token="<|startoftext|>",
        eos_token=EOS,
        pad_token=pad_token,
        unk_token=EOS,
        model_max_length=77,
    )
    tok.save_pretrained(folder)
    return folder


def clip_tokenizer(pad_token: str = EOS):
    """An in-memory `CLIPTokenizer` (written to and read back from a temporary folder)."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="diffusia-tok-") as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp, pad_token))
