"""Feature extractors for the Frechet distance (EfficientNet-Lite0 fallback, Inception detection)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from diffusia.errors import DiffusiaError
from diffusia.eval.metrics import features, get_feature_extractor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_inception(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(features.INCEPTION_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _photos() -> torch.Tensor:
    """A cat and a cup of espresso at 224x224 (the network's own resolution)."""
    imgs = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0 for a in (data.chelsea(), data.coffee())]
    return torch.cat([F.interpolate(i, size=(224, 224), mode="bilinear", align_corners=False) for i in imgs])


def test_effnet_fallback_shape_name_determinism_semantics() -> None:
    name, extract = get_feature_extractor(batch_size=1)  # two batches of one image
    assert name == "FD-EffNetLite0"
    imgs = _photos()
    f = extract(imgs)
    assert f.shape == (2, 1280) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.array_equal(f, extract(imgs))
    # The pooled features feed the real ImageNet classifier: cat -> a cat class, coffee -> espresso/cup.
    top1 = features._effnet_model()._fc(torch.from_numpy(f).float()).argmax(dim=1).tolist()
    assert top1[0] in range(281, 286) and top1[1] in (967, 968)


def test_inception_weights_detection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert features.inception_weights_path() is None
    with pytest.raises(DiffusiaError, match=features.INCEPTION_ENV):
        get_feature_extractor(prefer="inception")
    fake = tmp_path / features.INCEPTION_FILE
    fake.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(features.INCEPTION_ENV, str(fake))
    assert features.inception_weights_path() == fake
    with pytest.raises(DiffusiaError):  # pytorch-fid missing here, or the file unreadable: never a silent FID
        get_feature_extractor(prefer="inception")
    assert get_feature_extractor()[0] == "FD-EffNetLite0"


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        get_feature_extractor(prefer="effnet")[1](torch.rand(2, 1, 32, 32))
    with pytest.raises(DiffusiaError):
        get_feature_extractor(prefer="clip")
