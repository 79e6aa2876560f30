import numpy as np
import pytest

from diffusia import load_pipeline
from diffusia.errors import DiffusiaError
from diffusia.generate import GenerationConfig, MemoryOptions, generate


@pytest.fixture(scope="module")
def pipe(micro_pipeline_dir):
    return load_pipeline(micro_pipeline_dir, progress=False)


def test_deterministic_for_a_seed(pipe):
    cfg = GenerationConfig(steps=3)
    a = generate(pipe, "a red sneaker", 2, cfg, output_type="np")
    b = generate(pipe, "a red sneaker", 2, cfg, output_type="np")
    assert a.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # image i uses seed + i
    c = generate(pipe, "a red sneaker", 1, GenerationConfig(steps=3, seed=43), output_type="np")
    np.testing.assert_array_equal(c[0], a[1])


def test_scheduler_is_dpm_solver(pipe):
    generate(pipe, "a bag", 1, GenerationConfig(steps=2), output_type="np")
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_memory_options_keep_the_image(micro_pipeline_dir):
    cfg = GenerationConfig(steps=2)
    plain = generate(load_pipeline(micro_pipeline_dir, progress=False), "a coat", 1, cfg, output_type="np")
    sliced_pipe = load_pipeline(micro_pipeline_dir, progress=False)
    cfg_sliced = GenerationConfig(steps=2, memory=MemoryOptions(attention_slicing=True, vae_slicing=True))
    sliced = generate(sliced_pipe, "a coat", 1, cfg_sliced, output_type="np")
    np.testing.assert_allclose(plain, sliced, atol=1e-4)


def test_cpu_offload_needs_cuda(pipe):
    with pytest.raises(DiffusiaError, match="needs CUDA"):
        generate(pipe, "a coat", 1, GenerationConfig(steps=1, memory=MemoryOptions(cpu_offload=True)))


@pytest.mark.parametrize("prompt", ["", "   ", ["ok", ""]])
def test_empty_prompt(pipe, prompt):
    with pytest.raises(DiffusiaError, match="empty prompt"):
        generate(pipe, prompt)


def test_cli_empty_prompt_fails_before_loading(tmp_path):
    from typer.testing import CliRunner

    from diffusia.cli import app

    result = CliRunner().invoke(
        app, ["generate", "--prompt", " ", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code != 0
    assert "--prompt ' ': must not be empty" in str(result.exception)  # not the missing-model error: checked first
    assert not (tmp_path / "x.png").exists()
