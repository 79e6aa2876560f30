"""Write the prompt sets shipped in diffusia/prompts/ (run once; the JSON files are the source of truth).

- tiny.json: every class x colour prompt of the embedded Fashion-MNIST pipeline, with its category.
- sd15_calibration.json / sd15_eval.json: 100 prompts each for SD v1.5, 25 per category
  (landscape, portrait, abstract, technical); the two sets do not overlap.
"""

import itertools
import json
import random
from pathlib import Path

from diffusia.data.fashion_mnist import CLASSES, COLOUR_NAMES, caption, category_of

OUT = Path(__file__).resolve().parents[1] / "diffusia" / "prompts"

SUBJECTS = {
    "landscape": [
        "a misty mountain valley at sunrise",
        "a desert canyon under a starry sky",
        "a frozen lake surrounded by pine forest",
        "rolling green hills with a lone oak tree",
        "a tropical beach with turquoise water",
        "a waterfall in a mossy rainforest",
        "a lavender field in Provence at dusk",
        "an alpine meadow full of wildflowers",
        "a volcanic island with black sand",
        "autumn forest with a winding river",
        "snowy peaks reflected in a calm fjord",
        "a foggy harbor with fishing boats",
        "terraced rice fields in the mountains",
        "a red rock arch in the desert",
        "northern lights over a tundra",
    ],
    "portrait": [
        "an elderly fisherman with a weathered face",
        "a young woman with freckles in soft window light",
        "a jazz musician holding a saxophone",
        "a child laughing in the rain",
        "a samurai in ornate armor",
        "a scientist in a lab coat",
        "a ballet dancer backstage",
        "a farmer in a straw hat at golden hour",
        "an astronaut without a helmet",
        "a street artist covered in paint",
        "a grandmother knitting by the fire",
        "a chef in a busy kitchen",
        "a knight with a scarred face",
        "a smiling nurse in scrubs",
        "a poet in a cafe",
    ],
    "abstract": [
        "swirling ribbons of liquid gold",
        "geometric shapes in bauhaus colors",
        "a fractal spiral of neon light",
        "melting clocks in a dreamlike space",
        "ink drops diffusing in water",
        "overlapping translucent circles",
        "a storm of colorful paint splashes",
        "glitch art of a broken signal",
        "soft gradients of pastel fog",
        "shattered glass refracting rainbow light",
        "a kaleidoscope of ornate patterns",
        "flowing lines like sound waves",
        "cubist composition of a guitar",
        "marbled paper in deep blue",
        "a tessellation of impossible triangles",
    ],
    "technical": [
        "an exploded view of a mechanical wristwatch",
        "a blueprint of a steam locomotive",
        "a cutaway diagram of a jet engine",
        "a circuit board macro photograph",
        "an isometric drawing of a server room",
        "a cross-section of a suspension bridge",
        "a CAD render of a robotic arm",
        "a technical illustration of a sailboat rigging",
        "an architectural section of a skyscraper",
        "a patent drawing of a bicycle gear",
        "a schematic of a radio receiver",
        "a wireframe model of a sports car",
        "an orthographic view of a drone",
        "a labeled diagram of a camera lens",
        "a 3d render of a gearbox",
    ],
}
STYLES = [
    "",
    ", highly detailed",
    ", oil painting",
    ", photograph, 35mm",
    ", digital art",
    ", watercolor",
    ", in the style of a vintage poster",
]


def sd15_sets(seed: int = 0):
    rng = random.Random(seed)
    calib, evals = [], []
    for category, subjects in SUBJECTS.items():
        combos = [s + st for s, st in itertools.product(subjects, STYLES)]
        rng.shuffle(combos)
        calib += [{"prompt": p, "category": category} for p in combos[:25]]
        evals += [{"prompt": p, "category": category} for p in combos[25:50]]
    return calib, evals


def tiny_set():
    return [
        {"prompt": caption(c, k), "category": category_of(CLASSES[c]), "class": CLASSES[c], "colour": COLOUR_NAMES[k]}
        for c in range(len(CLASSES))
        for k in range(len(COLOUR_NAMES))
    ]


if __name__ == "__main__":
    calib, evals = sd15_sets()
    assert not {p["prompt"] for p in calib} & {p["prompt"] for p in evals}
    for name, data in [("tiny", tiny_set()), ("sd15_calibration", calib), ("sd15_eval", evals)]:
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
