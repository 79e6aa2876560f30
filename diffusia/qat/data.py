"""Training data of quantization-aware training, as deterministic batches: batch `step` depends only on
(seed, step), so a resumed run sees exactly the batches an uninterrupted one would.

* `DistillData`: data-free distillation. Every (sample, timestep, encoder_hidden_states and, for SDXL, the added
  conditioning) the FP32 U-Net receives along sampling trajectories of calibration prompts, with the FP32 U-Net's
  noise prediction as the target.
* `FashionMNISTData`: the noise-prediction objective on image-caption pairs (coloured Fashion-MNIST, the `tiny`
  model's training data): latents of the pipeline's VAE (x scaling_factor), captions through its text encoder,
  random DDPM timesteps (diffusia.models.architectures.SD_BETAS) and Gaussian noise as the target.
* `SharedCalibration`: the distillation data recorded in the same sampling pass as a study's calibration
  observations, so QAT samples nothing of its own there.

A batch is drawn for the whole job (`batch * world` items) and process `rank` takes its slice, so one process with
batch 2B sees the same items as two processes with batch B each.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffusia.calib.forward_loop import CALIBRATION_SEED, UnetCall, recording_unet_calls, sampling_forward_loop
from diffusia.calib.observations import Observations
from diffusia.errors import DiffusiaError
from diffusia.models.unet_inputs import ADDED_INPUTS
from diffusia.prompts import Prompt

log = logging.getLogger(__name__)

SOURCES = ("distill", "fashion-mnist")
DATA_FORMAT, DATA_VERSION = "diffusia.qat.distill_data", 2  # v1 was a torch.save pickle
TENSORS = ("samples", "timesteps", "ehs_table", "ehs_index", "targets")  # and ADDED_INPUTS for SDXL


@dataclass
class Batch:
    """One training batch for the U-Net: inputs and the target noise prediction."""

    sample: Tensor
    timestep: Tensor  # (B,) float
    encoder_hidden_states: Tensor
    target: Tensor
    added: dict[str, Tensor] | None = None  # SDXL's added conditioning, one row per item

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.sample.to(device),
            self.timestep.to(device),
            self.encoder_hidden_states.to(device),
            self.target.to(device),
            None if self.added is None else {k: v.to(device) for k, v in self.added.items()},
        )

    def added_rows(self, idx: Tensor) -> dict[str, Tensor] | None:
        """`added_cond_kwargs` of the items `idx` (None without added conditioning)."""
        return None if self.added is None else {k: v[idx] for k, v in self.added.items()}

    def __len__(self) -> int:
        return int(self.sample.shape[0])


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of batch `step` (independent of every other step)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + 1) % (2**63))


def _rank_slice(batch: int, rank: int, world: int) -> slice:
    if batch < 1 or world < 1 or not 0 <= rank < world:
        raise DiffusiaError(f"invalid batch/rank/world {batch}/{rank}/{world}")
    return slice(rank * batch, (rank + 1) * batch)


class DistillData:
    """Recorded U-Net inputs and FP32 teacher outputs, one item per batch row of each recorded call.

    Conditioning tensors repeat across the steps of a trajectory, so they are stored once in `ehs_table` and
    referenced by `ehs_index`; SDXL's added conditioning (`added`) is small and kept per item."""

    def __init__(
        self,
        samples: Tensor,
        timesteps: Tensor,
        ehs_table: Tensor,
        ehs_index: Tensor,
        targets: Tensor,
        info: dict[str, Any] | None = None,
        added: dict[str, Tensor] | None = None,
    ) -> None:
        n = samples.shape[0]
        rows = [timesteps.shape[0], ehs_index.shape[0], targets.shape[0], *(v.shape[0] for v in (added or {}).values())]
        if any(r != n for r in rows) or n == 0 or (added is not None and set(added) != set(ADDED_INPUTS)):
            raise DiffusiaError("distillation data is empty or inconsistent: record it again")
        self.samples, self.timesteps, self.targets = samples, timesteps.float(), targets
        self.ehs_table, self.ehs_index = ehs_table, ehs_index.long()
        self.added = None if added is None else {k: v.float() for k, v in added.items()}
        self.info = dict(info or {})

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @classmethod
    def from_calls(
        cls, calls: list[UnetCall], outputs: list[Tensor], info: dict[str, Any] | None = None
    ) -> DistillData:
        """Build from `record_unet_inputs` calls and the U-Net outputs of the same calls."""
        if len(calls) != len(outputs) or not calls:
            raise DiffusiaError(f"{len(calls)} recorded U-Net calls but {len(outputs)} outputs")
        samples, timesteps, index, targets, table = [], [], [], [], []
        for (sample, t, ehs, _), out in zip(calls, outputs):
            b = sample.shape[0]
            t = torch.as_tensor(t).float().reshape(-1)
            timesteps.append(t.expand(b) if t.numel() == 1 else t)
            if not table or table[-1].shape != ehs.shape or not torch.equal(table[-1], ehs):
                table.append(ehs)
            start = sum(x.shape[0] for x in table[:-1])
            index.append(torch.arange(start, start + b))
            samples.append(sample)
            targets.append(out)
        return cls(
            torch.cat(samples).float(),
            torch.cat(timesteps),
            torch.cat(table).float(),
            torch.cat(index),
            torch.cat(targets).float(),
            info,
            None if calls[0].added is None else {k: torch.cat([c.added[k] for c in calls]) for k in ADDED_INPUTS},
        )

    @classmethod
    def record(
        cls,
        pipe,
        prompts: list[Prompt],
        steps: int,
        guidance: float,
        seed: int = CALIBRATION_SEED,
        progress: bool = False,
    ) -> tuple[DistillData, list[UnetCall]]:
        """Run the (float) pipeline over `prompts`; returns the data and the raw calls (for calibration)."""
        t0 = time.perf_counter()
        with recording_unet_calls(pipe.unet, outputs=True) as recorded, torch.no_grad():
            sampling_forward_loop(pipe, prompts, steps, guidance, seed, progress)()
        calls, outputs = recorded.calls, recorded.outputs
        info = dict(
            prompts=len(prompts),
            steps=steps,
            guidance=guidance,
            seed=seed,
            unet_calls=len(calls),
            seconds=time.perf_counter() - t0,
        )
        data = cls.from_calls(calls, outputs, info)
        log.info(
            "recorded %d U-Net calls (%d items) along %d trajectories in %.1f s",
            len(calls),
            len(data),
            len(prompts),
            info["seconds"],
        )
        return data, calls

    def batch(self, step: int, seed: int, batch: int, rank: int = 0, world: int = 1) -> Batch:
        """Items drawn with replacement from the stream of (seed, step); this process's slice."""
        gen = step_generator(seed, step)
        idx = torch.randint(0, len(self), (batch * world,), generator=gen)[_rank_slice(batch, rank, world)]
        ehs = self.ehs_table[self.ehs_index[idx]]
        added = None if self.added is None else {k: v[idx] for k, v in self.added.items()}
        return Batch(self.samples[idx], self.timesteps[idx], ehs, self.targets[idx], added)

    def save(self, path: str | Path) -> None:
        """Write atomically: the tensors as safetensors, format and `info` (JSON) in its metadata."""
        from safetensors.torch import save_file

        from diffusia.fileio import atomic_path

        meta = {"format": DATA_FORMAT, "version": str(DATA_VERSION), "info": json.dumps(self.info)}
        with atomic_path(path) as tmp:
            tensors = {k: getattr(self, k).contiguous() for k in TENSORS}
            save_file(
                {**tensors, **{k: v.contiguous() for k, v in (self.added or {}).items()}}, str(tmp), metadata=meta
            )

    @classmethod
    def load(cls, path: str | Path) -> DistillData:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if (meta.get("format"), meta.get("version")) != (DATA_FORMAT, str(DATA_VERSION)):
                    raise ValueError(f"not diffusia distillation data v{DATA_VERSION}")
                tensors = [f.get_tensor(k) for k in TENSORS]
                added = {k: f.get_tensor(k) for k in ADDED_INPUTS if k in f.keys()} or None
            info = json.loads(meta.get("info", "{}"))
            if not isinstance(info, dict):
                raise ValueError("its info is not a JSON object")
        except (OSError, ValueError, SafetensorError) as e:
            raise DiffusiaError(
                f"distillation data {path} is unreadable ({' '.join(str(e).split())}): start again "
                "with --overwrite instead of --resume"
            ) from None
        return cls(*tensors, info, added)


@dataclass(frozen=True)
class SharedCalibration:
    """One float sampling pass over the calibration prompts seen two ways: the calibrators' observations (the
    ranges of every PTQ variant, `diffusia.calib.observations`) and the distillation data of the same U-Net calls
    (QAT's PTQ start and its teacher). A study records it once for its W8A8 variants and QAT."""

    observations: Observations
    distill: DistillData

    @classmethod
    def record(
        cls, pipe, recipe, prompts: list[Prompt], steps: int, guidance: float, batch: int = 1, progress: bool = False
    ) -> SharedCalibration:
        t0 = time.perf_counter()
        with recording_unet_calls(pipe.unet, outputs=True) as recorded:
            observations = Observations.record(pipe, recipe, prompts, steps, guidance, batch=batch, progress=progress)
        info = dict(
            prompts=len(prompts),
            steps=steps,
            guidance=guidance,
            seed=observations.sampling.seed,
            unet_calls=len(recorded.calls),
            seconds=time.perf_counter() - t0,
            batch=batch,
        )
        return cls(observations, DistillData.from_calls(recorded.calls, recorded.outputs, info))


def ddpm_alphas_cumprod() -> Tensor:
    """Cumulative alphas of the SD DDPM schedule the models are trained with."""
    from diffusers import DDPMScheduler

    from diffusia.models.architectures import SD_BETAS

    return DDPMScheduler(**SD_BETAS).alphas_cumprod.float()


class FashionMNISTData:
    """Coloured Fashion-MNIST (same colours and captions as the `tiny` training set for `colour_seed`), encoded on
    the fly with the pipeline's VAE and text encoder; the target is the added noise (eps-prediction)."""

    def __init__(
        self, pipe, split: str = "train", colour_seed: int = 0, caption_dropout: float = 0.1, limit: int | None = None
    ) -> None:
        from diffusia.data.fashion_mnist import COLOURS, load_split

        if not 0.0 <= caption_dropout < 1.0:
            raise DiffusiaError(f"caption dropout must be in [0, 1), got {caption_dropout}")
        if getattr(pipe, "text_encoder_2", None) is not None:
            raise DiffusiaError(
                "the fashion-mnist QAT source encodes captions with one text encoder (SD 1.x/2.x), and this pipeline "
                "is SDXL: use --source distill"
            )
        grey, labels = load_split(split)
        # the colour stream of diffusia.data.fashion_mnist.coloured_split over the full split
        colours = np.random.default_rng(colour_seed).integers(0, len(COLOURS), size=len(labels))
        n = len(labels) if limit is None else min(int(limit), len(labels))
        self.grey, self.labels, self.colours = grey[:n], labels[:n], colours[:n]
        self.pipe, self.caption_dropout = pipe, float(caption_dropout)
        self.alphas_cumprod = ddpm_alphas_cumprod()
        self.num_train_timesteps = len(self.alphas_cumprod)

    def __len__(self) -> int:
        return int(len(self.labels))

    def images(self, idx: np.ndarray) -> Tensor:
        """(B,3,S,S) RGB in [0,1] at the VAE's sample size."""
        from diffusia.data.fashion_mnist import colourise

        x = torch.from_numpy(colourise(self.grey[idx], self.colours[idx]))
        size = int(getattr(self.pipe.vae.config, "sample_size", x.shape[-1]) or x.shape[-1])
        if size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def captions(self, idx: np.ndarray) -> list[str]:
        from diffusia.data.fashion_mnist import caption

        return [caption(int(self.labels[i]), int(self.colours[i])) for i in idx]

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Tensor:
        tok = self.pipe.tokenizer
        ids = tok(
            captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        enc = self.pipe.text_encoder
        return enc(ids.to(enc.device))[0].float().cpu()

    @torch.no_grad()
    def encode_images(self, x: Tensor) -> Tensor:
        vae = self.pipe.vae
        dist = vae.encode((x * 2 - 1).to(vae.device, vae.dtype)).latent_dist
        return (dist.mean * vae.config.scaling_factor).float().cpu()

    def batch(self, step: int, seed: int, batch: int, rank: int = 0, world: int = 1) -> Batch:
        """Random items, timesteps, caption drops and noise from the stream of (seed, step); this process's slice."""
        gen = step_generator(seed, step)
        total, part = batch * world, _rank_slice(batch, rank, world)
        idx = torch.randint(0, len(self), (total,), generator=gen)[part].numpy()
        t = torch.randint(0, self.num_train_timesteps, (total,), generator=gen)[part]
        drop = (torch.rand(total, generator=gen) < self.caption_dropout)[part]
        x0 = self.encode_images(self.images(idx))
        noise = torch.randn((total, *x0.shape[1:]), generator=gen)[part]
        texts = ["" if d else c for c, d in zip(self.captions(idx), drop.tolist())]
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return Batch(xt, t.float(), self.encode_text(texts), noise)
