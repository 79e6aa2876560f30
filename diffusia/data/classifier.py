"""A small CNN that names the Fashion-MNIST class of a coloured 32x32 item; judges the embedded pipeline's images."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffusia.errors import DiffusiaError

WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "fmnist_classifier.safetensors"


class FashionClassifier(nn.Module):
    """Input (N,3,32,32) in [0,1]; colour is removed by taking the per-pixel max over channels."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(1, 32), block(32, 64), block(64, 128))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 4 * 4, num_classes))

    @staticmethod
    def to_grey(x: torch.Tensor) -> torch.Tensor:
        g = x.amax(dim=1, keepdim=True)
        return g / g.amax(dim=(2, 3), keepdim=True).clamp_min(1e-3)  # undo the colour's brightness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.to_grey(x)))


def load_classifier(path: str | Path = WEIGHTS) -> FashionClassifier:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise DiffusiaError(f"classifier weights missing at {path}: run `python scripts/train_classifier.py`")
    model = FashionClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()
