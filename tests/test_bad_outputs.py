"""Bad --out paths for every command that writes: each is refused with one line and exit code 2 before any work,
and nothing on disk changes; --overwrite replaces an earlier output of the same command, and a failed check
removes what it wrote."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffusia.fileio import mark_output_dir, output_kind
from tests._cli_support import diffusia, refused, snapshot


@dataclass
class Ctx:
    tmp: Path
    model: Path  # a float pipeline folder (read-only, shared)
    results: Path  # an evaluation run folder


@pytest.fixture
def ctx(tmp_path, micro_pipeline_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "runs" / "run"
    results.mkdir(parents=True)
    (results / "results.json").write_text(
        json.dumps(
            {
                "device": "cpu",
                "variants": [
                    {
                        "name": "fp32",
                        "precision": "fp32",
                        "size_mb": 10,
                        "peak_mb": 300,
                        "latency_s": 1.0,
                        "lpips": 0.0,
                    },
                    {
                        "name": "w8a8",
                        "precision": "w8a8",
                        "size_mb": 3,
                        "peak_mb": 200,
                        "latency_s": 0.7,
                        "lpips": 0.05,
                    },
                ],
            }
        )
    )
    (tmp_path / "notes.txt").write_text("the user's notes")
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "thesis.tex").write_text("the user's thesis")
    return Ctx(tmp_path, micro_pipeline_dir, results)


# folder-writing commands: (arguments before --out, the kind of output they write, their main input)
FOLDER_COMMANDS = {
    "quantize": (lambda c: ["quantize", "--model", c.model, "--calib-prompts", "tiny"], "quantized", "model"),
    "qat": (lambda c: ["qat", "--model", c.model, "--calib-prompts", "tiny"], "quantized", "model"),
    "eval": (lambda c: ["eval", "--model", c.model, "--variants", "fp32"], "eval", "model"),
    "study": (lambda c: ["study", "--model", c.model, "--quick"], "study", "model"),
    "sensitivity": (lambda c: ["sensitivity", "--model", c.model, "--calib-prompts", "tiny"], "sensitivity", "model"),
    "pareto": (lambda c: ["pareto", "--results", c.results], "pareto", "results"),
}


def _earlier(c: Ctx, kind: str, name: str = "earlier") -> Path:
    """An earlier diffusia output of `kind`."""
    folder = c.tmp / name
    if kind == "quantized":
        folder.mkdir()
        (folder / "diffusia.json").write_text(json.dumps({"format": "diffusia.quantized_pipeline", "version": 1}))
    else:
        mark_output_dir(folder, kind)
        (folder / "report.md").write_text("earlier")
    return folder


# case -> (--out and extra arguments for a command of `kind` with main input `given`, expected message)
FOLDER_CASES = {
    "existing file": (lambda c, kind, given: (c.tmp / "notes.txt", []), "is an existing file, not a folder"),
    "below a file": (lambda c, kind, given: (c.tmp / "notes.txt" / "out", []), "which is a file"),
    "user's folder": (lambda c, kind, given: (c.tmp / "mydata", ["--overwrite"]), "neither empty nor a diffusia"),
    "the input": (lambda c, kind, given: (given, ["--overwrite"]), "is the input"),
    "inside the input": (lambda c, kind, given: (given / "out", []), "is inside the input"),
    "containing the input": (lambda c, kind, given: (given.parent, ["--overwrite"]), "contains the input"),
    "current directory": (lambda c, kind, given: (Path("."), ["--overwrite"]), "current directory"),
    "earlier output": (lambda c, kind, given: (_earlier(c, kind), []), "pass --overwrite to replace it"),
    "another command's output": (
        lambda c, kind, given: (_earlier(c, "pareto" if kind != "pareto" else "eval"), ["--overwrite"]),
        "output, not a",
    ),
}


@pytest.mark.parametrize("case", FOLDER_CASES)
@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_bad_output_folder_is_refused_and_nothing_changes(ctx, monkeypatch, capsys, command, case):
    args, kind, given = FOLDER_COMMANDS[command]
    make, message = FOLDER_CASES[case]
    out, extra = make(ctx, kind, ctx.model if given == "model" else ctx.results)
    before = snapshot(ctx.tmp, ctx.model.parent)
    refused(monkeypatch, capsys, [*args(ctx), "--out", out, *extra], message)
    assert snapshot(ctx.tmp, ctx.model.parent) == before


# file-writing commands: (arguments before --out, file name, an earlier output of the command)
def _png(path: Path, ours: bool) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from diffusia.fileio import PNG_SOFTWARE

    info = PngInfo()
    if ours:
        info.add_text("Software", PNG_SOFTWARE)
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)


def _onnx(path: Path, ours: bool) -> None:
    if not ours:
        path.write_bytes(b"\x08\x07\x12\x04mine")  # an ONNX file that PyTorch did not export
        return
    import torch

    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(path), dynamo=False)


def _recipe(path: Path, ours: bool) -> None:
    path.write_text(json.dumps({"weights": "w8a8", "rules": [], "version": 1} if ours else {"my": "settings"}))


FILE_COMMANDS = {
    "generate": (lambda c: ["generate", "--prompt", "a bag", "--model", c.model, "--steps", "1"], "a.png", _png),
    "export": (lambda c: ["export", "--model", c.model], "unet.onnx", _onnx),
    "search": (lambda c: ["search", "--sensitivity", c.results, "--budget-mb", "1"], "recipe.json", _recipe),
}


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "kept").write_text("the user's")
    return path


def _file(c: Ctx, name: str, write, ours: bool) -> Path:
    write(c.tmp / name, ours)
    return c.tmp / name


FILE_CASES = {
    "existing folder": (lambda c, name, write: (_folder(c.tmp / name), ["--overwrite"]), "is an existing folder"),
    "below a file": (lambda c, name, write: (c.tmp / "notes.txt" / name, []), "which is a file"),
    "user's file": (lambda c, name, write: (_file(c, name, write, ours=False), ["--overwrite"]), "exists and is not a"),
    "earlier output": (lambda c, name, write: (_file(c, name, write, ours=True), []), "pass --overwrite to replace it"),
    "inside the input": (lambda c, name, write: (c.model / name, []), "is inside the input"),
}


@pytest.mark.parametrize("case", FILE_CASES)
@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_bad_output_file_is_refused_and_nothing_changes(ctx, monkeypatch, capsys, command, case):
    args, name, write = FILE_COMMANDS[command]
    make, message = FILE_CASES[case]
    out, extra = make(ctx, name, write)
    if command == "search" and case == "inside the input":
        out = ctx.results / name  # search reads a sensitivity folder, not a model
    before = snapshot(ctx.tmp, ctx.model.parent)
    refused(monkeypatch, capsys, [*args(ctx), "--out", out, *extra], message)
    assert snapshot(ctx.tmp, ctx.model.parent) == before


# --overwrite replaces an earlier output of the same command
def test_quantize_replaces_its_own_output_only_with_overwrite(ctx, monkeypatch, capsys):
    args = ["quantize", "--model", ctx.model, "--calib-prompts", "tiny", "--calib-size", "1", "--out", ctx.tmp / "q"]
    assert diffusia(monkeypatch, capsys, *args, "--recipe", "w8")[0] == 0
    first = (ctx.tmp / "q" / "diffusia.json").read_bytes()
    refused(monkeypatch, capsys, [*args, "--recipe", "fp16"], "pass --overwrite")
    assert (ctx.tmp / "q" / "diffusia.json").read_bytes() == first
    code, err = diffusia(monkeypatch, capsys, *args, "--recipe", "fp16", "--overwrite")
    assert code == 0, err
    meta = json.loads((ctx.tmp / "q" / "diffusia.json").read_text())
    assert meta["recipe"]["name"] == "fp16" and output_kind(ctx.tmp / "q") == "quantized"
    mask = os.umask(0)
    os.umask(mask)
    assert (ctx.tmp / "q").stat().st_mode & 0o777 == 0o777 & ~mask  # the user's umask, not mkdtemp's 0700
    assert sorted(p.name for p in ctx.tmp.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_generate_marks_its_images_and_replaces_them_only_with_overwrite(ctx, monkeypatch, capsys):
    args = [
        "generate",
        "--prompt",
        "a bag",
        "--model",
        ctx.model,
        "--steps",
        "1",
        "--num-images",
        "2",
        "--out",
        ctx.tmp / "img.png",
    ]
    assert diffusia(monkeypatch, capsys, *args)[0] == 0
    paths = [ctx.tmp / "img-0.png", ctx.tmp / "img-1.png"]
    assert all(b"Software\x00diffusia" in p.read_bytes()[:200] for p in paths)
    refused(monkeypatch, capsys, args, "pass --overwrite")
    paths[1].unlink()
    _png(paths[1], ours=False)  # one of the two is now the user's: nothing is written
    before = snapshot(ctx.tmp)
    refused(monkeypatch, capsys, [*args, "--overwrite"], "is not a PNG image generated by diffusia")
    assert snapshot(ctx.tmp) == before
    paths[1].unlink()
    assert diffusia(monkeypatch, capsys, *args, "--overwrite")[0] == 0


def test_pareto_and_search_replace_their_own_outputs_with_overwrite(ctx, monkeypatch, capsys):
    out = ctx.tmp / "p"
    args = ["pareto", "--results", ctx.results, "--out", out]
    assert diffusia(monkeypatch, capsys, *args)[0] == 0
    assert output_kind(out) == "pareto" and (out / "pareto.md").is_file()
    (out / "stale.txt").write_text("from the earlier run")
    refused(monkeypatch, capsys, args, "pass --overwrite")
    assert diffusia(monkeypatch, capsys, *args, "--overwrite")[0] == 0
    assert (out / "pareto.md").is_file() and not (out / "stale.txt").exists()  # replaced, not merged

    from tests.analysis._support import fake_sensitivity, micro_unet

    (ctx.tmp / "sens" / "sensitivity.json").parent.mkdir()
    (ctx.tmp / "sens" / "sensitivity.json").write_text(json.dumps(fake_sensitivity(micro_unet())))
    args = ["search", "--sensitivity", ctx.tmp / "sens", "--budget-mb", "2.5", "--out", ctx.tmp / "r.json"]
    assert diffusia(monkeypatch, capsys, *args)[0] == 0
    refused(monkeypatch, capsys, args, "pass --overwrite")
    (ctx.tmp / "r.search.json").write_text("{}")  # the summary is checked too
    refused(monkeypatch, capsys, [*args, "--overwrite"], "r.search.json exists and is not a diffusia search summary")
    (ctx.tmp / "r.search.json").unlink()
    assert diffusia(monkeypatch, capsys, *args, "--overwrite")[0] == 0


def test_failed_eval_restores_the_earlier_output(ctx, monkeypatch, capsys):
    earlier = _earlier(ctx, "eval")
    before = snapshot(ctx.tmp)
    refused(
        monkeypatch,
        capsys,
        ["eval", "--model", ctx.model, "--variants", "fp32,nope", "--out", earlier, "--overwrite"],
        "unknown variant 'nope'",
    )
    assert snapshot(ctx.tmp) == before
    refused(
        monkeypatch,
        capsys,
        ["eval", "--model", ctx.model, "--variants", "fp32,nope", "--out", ctx.tmp / "new" / "eval"],
        "unknown variant 'nope'",
    )
    assert snapshot(ctx.tmp) == before  # no half-made folders either


@pytest.fixture(scope="module")
def quantized(micro_pipeline_dir, tmp_path_factory):
    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline

    pipe = quantize_pipeline(
        load_pipeline(micro_pipeline_dir, progress=False),
        get_preset("w8a8"),
        load_prompts("tiny"),
        calib_size=1,
        steps=1,
        progress=False,
        validate=False,
    )
    return save_quantized_pipeline(pipe, tmp_path_factory.mktemp("q") / "q")


def test_export_that_fails_its_check_leaves_no_onnx(ctx, quantized, monkeypatch, capsys):
    # a model whose output does not move with rounding ties: the tolerance alone gates (the micro model's does move,
    # 2.3 % with the avx2 layout, and an output within 1.5x of that would pass)
    monkeypatch.setattr("diffusia.runtime.artifact.own_tie_noise", lambda unet, timesteps: 0.0)
    new = ctx.tmp / "new.onnx"
    refused(monkeypatch, capsys, ["export", "--model", quantized, "--out", new, "--tolerance", "1e-9"], "ONNX Runtime")
    assert not new.exists()
    earlier = ctx.tmp / "earlier.onnx"
    _onnx(earlier, ours=True)
    before = snapshot(ctx.tmp)
    refused(
        monkeypatch,
        capsys,
        ["export", "--model", quantized, "--out", earlier, "--tolerance", "1e-9", "--overwrite"],
        "ONNX Runtime",
    )
    assert snapshot(ctx.tmp) == before  # the earlier file is intact and no temporary is left


def test_qat_resumes_into_its_own_folder_without_overwrite(ctx, monkeypatch, capsys):
    out = ctx.tmp / "qat"
    args = [
        "qat",
        "--model",
        ctx.model,
        "--calib-prompts",
        "tiny",
        "--calib-size",
        "1",
        "--calib-steps",
        "1",
        "--batch",
        "1",
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "--out",
        out,
    ]
    assert diffusia(monkeypatch, capsys, *args)[0] == 0
    refused(monkeypatch, capsys, args, "pass --overwrite")
    code, err = diffusia(monkeypatch, capsys, *[a if a != "2" else "3" for a in args], "--resume")
    assert code == 0, err
    assert json.loads((out / "diffusia.json").read_text())["qat"]["resumed_from_step"] == 2
    assert output_kind(out) == "quantized" and (out / "checkpoints" / "step-0000003").is_dir()
