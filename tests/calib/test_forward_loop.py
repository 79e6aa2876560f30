"""The calibration forward loop: batching prompts changes how many U-Net calls carry the trajectories, not the
trajectories."""

import torch

from diffusia.calib.forward_loop import sampling_forward_loop
from diffusia.prompts import load_prompts
from tests.conftest import build_micro_pipeline


def _unet_inputs(pipe, prompts, batch):
    seen = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            sampling_forward_loop(pipe, prompts, steps=3, progress=False, batch=batch)()
    finally:
        handle.remove()
    return seen


def test_batched_prompts_follow_the_same_trajectories():
    pipe, prompts = build_micro_pipeline(), load_prompts("tiny")[:3]
    one = _unet_inputs(pipe, prompts, batch=1)
    two = _unet_inputs(pipe, prompts, batch=2)
    assert len(one) == 3 * 3 and len(two) == 2 * 3  # ceil(3 / 2) pipeline calls x 3 steps
    assert [t.shape[0] for t in two] == [4] * 3 + [2] * 3  # both guidance branches of each prompt in the batch
    # sample layout per call: [uncond prompts..., cond prompts...]; prompt i starts from seed + i either way
    for step in range(3):
        batched = torch.cat([two[step][:2], two[3 + step][:1]])
        single = torch.cat([one[3 * i + step][:1] for i in range(3)])
        torch.testing.assert_close(batched, single, rtol=1e-3, atol=1e-3)


def test_calibration_runs_at_the_requested_resolution():
    from diffusia.quant.pipeline import quantize_pipeline

    pipe = build_micro_pipeline()
    sizes = []
    pipe.unet.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
    quantize_pipeline(pipe, "w8a8", load_prompts("tiny"), calib_size=1, steps=2, progress=False, validate=False)
    default = sizes[:]
    sizes.clear()
    pipe = build_micro_pipeline()
    pipe.unet.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
    quantize_pipeline(
        pipe, "w8a8", load_prompts("tiny"), calib_size=1, steps=2, progress=False, validate=False, resolution=32
    )
    assert (
        default == [(8, 8)] * 2 and sizes == [(16, 16)] * 2
    )  # the micro pipeline's 16 px (its VAE scales by 2), then 32 px
    assert pipe.diffusia_calibration.resolution == 32
