"""Quality of the embedded `tiny` pipeline: generate every class x colour prompt at the reference defaults
(DPM-Solver multistep, 25 steps, guidance 7.5, seeds 42 + i, batch 1), then report
(a) the accuracy of the Fashion-MNIST classifier (scripts/train_classifier.py) on the generated images, overall,
    per class and per prompt category; the accuracy of the colour (nearest named colour of the item's pixels);
(b) the Frechet distance between generated images and the real (coloured) Fashion-MNIST test set, on
    EfficientNet-Lite0 features (`FD-EffNetLite0`, NOT comparable with published FID) unless Inception is present.

    python benchmarks/tiny_quality.py [--model tiny] [--per-prompt 2]
Writes benchmarks/results/<class>/tiny_quality.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict

import numpy as np
import torch
from _results import results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)

from diffusia import load_pipeline
from diffusia.data.classifier import load_classifier
from diffusia.data.fashion_mnist import CLASSES, COLOURS, coloured_split
from diffusia.eval.metrics import frechet_distance, get_feature_extractor
from diffusia.fileio import write_json, write_text
from diffusia.generate import GenerationConfig, generate
from diffusia.prompts import load_prompts

OUT = results_dir()


def colour_of(image: np.ndarray) -> int:
    """Nearest named colour (by direction in RGB) of the item's bright pixels; image (H,W,3) in [0,1]."""
    bright = image.reshape(-1, 3)
    bright = bright[bright.max(1) > 0.5 * bright.max()]
    mean = bright.mean(0)
    names = np.asarray(list(COLOURS.values()))
    cos = names @ mean / (np.linalg.norm(names, axis=1) * np.linalg.norm(mean) + 1e-8)
    return int(np.argmax(cos))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--per-prompt", type=int, default=2, help="images per prompt (seeds 42, 43, ...)")
    p.add_argument("--real", type=int, default=2000, help="real test images for the Frechet distance")
    p.add_argument("--out", default=str(OUT / "tiny_quality"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.time()
    prompts = load_prompts("tiny")
    pipe = load_pipeline(args.model, progress=False)
    images = generate(pipe, [q.text for q in prompts], args.per_prompt, GenerationConfig(), output_type="np")
    gen_seconds = time.time() - t0
    meta = [q for q in prompts for _ in range(args.per_prompt)]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    clf = load_classifier()
    with torch.no_grad():
        pred = clf(x).argmax(1).numpy()
    records = _records(args.per_prompt)
    truth = np.array([CLASSES.index(r["class"]) for r in records])
    colour_truth = np.array([list(COLOURS).index(r["colour"]) for r in records])
    colour_pred = np.array([colour_of(im) for im in images])
    by_cat, by_class = defaultdict(list), defaultdict(list)
    for q, ok, cls in zip(meta, pred == truth, truth):
        by_cat[q.category].append(ok)
        by_class[CLASSES[cls]].append(ok)
    name, feats = get_feature_extractor()
    real, _, _, _ = coloured_split("test", seed=7, limit=args.real)
    fd = frechet_distance(feats(x), feats(torch.from_numpy(real)))
    result = {
        "model": getattr(pipe, "diffusia_spec", args.model),
        "images": len(images),
        "per_prompt": args.per_prompt,
        "sampler": "DPMSolverMultistep",
        "steps": 25,
        "guidance": 7.5,
        "seeds": f"42..{41 + args.per_prompt}",
        "class_accuracy": float(np.mean(pred == truth)),
        "colour_accuracy": float(np.mean(colour_pred == colour_truth)),
        "class_accuracy_by_category": {k: float(np.mean(v)) for k, v in by_cat.items()},
        "class_accuracy_by_class": {k: float(np.mean(v)) for k, v in by_class.items()},
        "frechet": {"metric": name, "value": fd, "real_images": len(real)},
        "classifier_test_accuracy_on_real": _real_accuracy(clf),
        "generation_seconds": gen_seconds,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    write_json(args.out + ".json", result)
    rows = "\n".join(f"| {k} | {v:.1%} |" for k, v in result["class_accuracy_by_category"].items())
    write_text(
        args.out + ".md",
        f"""# Embedded `tiny` pipeline quality

{len(images)} images ({args.per_prompt} per class x colour prompt), DPM-Solver multistep, 25 steps, guidance 7.5.

| metric | value |
|---|---|
| class accuracy (Fashion-MNIST classifier) | {result["class_accuracy"]:.1%} |
| colour accuracy | {result["colour_accuracy"]:.1%} |
| {name} to {len(real)} real test images | {fd:.2f} |
| classifier accuracy on real test images | {result["classifier_test_accuracy_on_real"]:.1%} |

| category | class accuracy |
|---|---|
{rows}

Machine: {result["machine"]}; generation took {gen_seconds:.0f} s.
""",
    )
    print(open(args.out + ".md").read())


def _records(per_prompt: int) -> list[dict]:
    """Class and colour of each generated image, from the shipped prompt set."""
    import json

    from diffusia.prompts import HERE

    raw = json.loads((HERE / "tiny.json").read_text())
    return [r for r in raw for _ in range(per_prompt)]


def _real_accuracy(clf) -> float:
    x, y, _, _ = coloured_split("test", seed=3)
    with torch.no_grad():
        pred = torch.cat([clf(torch.from_numpy(x[i : i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


if __name__ == "__main__":
    main()
