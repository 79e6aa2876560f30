"""The export check's output gate (`raise_on_failed_check`): beyond the tolerance, a quantized U-Net's graph passes
only within `TIE_MARGIN` times the model's own tie noise, and that noise is measured only when needed."""

import pytest

from diffusia.errors import DiffusiaError
from diffusia.runtime import artifact

AGREED = {"quantizers": {"other_differences": 0, "unmatched": 0, "first_other_difference": None}}


def _noise(value):
    def measure(unet, timesteps):
        assert timesteps == [999, 500]
        return value

    return measure


def test_output_within_the_models_own_tie_noise_passes(monkeypatch):
    monkeypatch.setattr(artifact, "own_tie_noise", _noise(0.10))
    check = {**AGREED, "relative_l2_vs_diffusia": 0.12}
    artifact.raise_on_failed_check(check, "openvino", 0.05, unet=object(), timesteps=[999, 500])
    assert check["tie_noise"] == 0.10
    check = {**AGREED, "relative_l2_vs_diffusia": 0.16}
    with pytest.raises(DiffusiaError, match=r"by 16\.00% relative L2 \(> 5\.00%, and > 1\.5x the 10\.00% by which"):
        artifact.raise_on_failed_check(check, "openvino", 0.05, unet=object(), timesteps=[999, 500])


def test_tie_noise_is_measured_only_beyond_the_tolerance_of_a_quantized_graph(monkeypatch):
    def unexpected(unet, timesteps):
        raise AssertionError("tie noise measured")

    monkeypatch.setattr(artifact, "own_tie_noise", unexpected)
    check = {**AGREED, "relative_l2_vs_diffusia": 0.04}
    artifact.raise_on_failed_check(check, "onnxruntime", 0.05, unet=object())
    assert "tie_noise" not in check
    # a float graph (no quantizers compared) has no ties: the tolerance alone
    with pytest.raises(
        DiffusiaError, match=r"ONNX Runtime's output differs from diffusia's by 20\.00% .*\(> 5\.00%\)$"
    ):
        artifact.raise_on_failed_check(
            {"relative_l2_vs_diffusia": 0.2, "quantizers": None}, "onnxruntime", 0.05, object()
        )
    with pytest.raises(DiffusiaError, match=r"by nan% relative L2"):
        artifact.raise_on_failed_check({**AGREED, "relative_l2_vs_diffusia": float("nan")}, "openvino", 0.05, object())
