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
