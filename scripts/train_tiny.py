"""Train the embedded `tiny` pipeline (SD v1.5 architecture, narrower) on coloured Fashion-MNIST.

Stages: (1) AutoencoderKL on 32x32 RGB items, whitened per latent channel (folded into its quant convs),
(2) latents of the training set, (3) U-Net + CLIP text encoder with the SD noise-prediction loss (min-SNR
weighted), caption dropout for classifier-free guidance and an EMA of the weights.
Writes a diffusers `StableDiffusionPipeline` folder (safetensors only). Reproducible for a seed on one machine.

    python scripts/train_tiny.py --out diffusia/assets/tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from diffusia.data.fashion_mnist import coloured_split
from diffusia.models.architectures import SD_BETAS, TINY_TEXT, TINY_UNET, TINY_VAE, build_components
from diffusia.models.latents import whiten_latent_space
from diffusia.models.tokenizer import write_clip_tokenizer

log = logging.getLogger("train_tiny")


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, lr: float, gen: torch.Generator):
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    vae.train()
    for step in (bar := tqdm(range(steps), desc="vae", mininterval=5)):
        x = images[torch.randint(0, len(images), (batch,), generator=gen)] * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    return loss.item()


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([vae.encode(images[i : i + batch] * 2 - 1).latent_dist.mean for i in range(0, len(images), batch)])


def ema_update(ema, model, decay: float):
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet, scheduler) -> None:
    from diffusers import StableDiffusionPipeline

    from diffusia.fileio import atomic_dir

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)


def train_unet(unet, text_encoder, tokenizer, latents, captions, args, gen, snapshot=None):
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler(**SD_BETAS)
    alphas = noise_sched.alphas_cumprod
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    unet.train(), text_encoder.train()
    losses = []
    stop = args.stop_at or args.steps
    for step in (bar := tqdm(range(stop), desc="unet", mininterval=5)):
        idx = torch.randint(0, len(latents), (args.batch,), generator=gen)
        x0, tok = latents[idx], ids[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < args.caption_dropout
        tok[drop] = empty
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, SD_BETAS["num_train_timesteps"], (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text_encoder(tok).last_hidden_state
        # min-SNR-gamma weighting (Hang et al. 2023) for epsilon prediction: weight = min(SNR, gamma) / SNR
        snr = (a / (1 - a)).view(-1)
        weight = snr.clamp(max=args.min_snr_gamma) / snr
        per_item = F.mse_loss(unet(xt, t, cond).sample, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * per_item).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text_encoder, decay)
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % 200 == 0:
            log.info("step %d loss %.4f", step, np.mean(losses[-200:]))
        if snapshot and args.snapshot_every and (step + 1) % args.snapshot_every == 0:
            snapshot(ema_unet, ema_text, step + 1)
    return ema_unet, ema_text, losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="diffusia/assets/tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--min-snr-gamma", type=float, default=5.0)
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="end after this many steps, keeping the learning-rate schedule of --steps",
    )
    p.add_argument(
        "--snapshot-every", type=int, default=500, help="write the EMA pipeline to OUT-snapshot every N steps"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--init", default=None, help="continue from this pipeline folder (keeps its VAE; trains U-Net + text)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.time()

    from transformers import CLIPTokenizer

    out = Path(args.out)
    images, labels, colours, captions = coloured_split("train", seed=args.seed)
    images = torch.from_numpy(images)
    parts = build_components(TINY_UNET, TINY_VAE, TINY_TEXT, seed=args.seed)
    with tempfile.TemporaryDirectory() as tok_dir:
        write_clip_tokenizer(Path(tok_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    if args.init:  # continue training a shipped pipeline: same VAE and latent scale, U-Net and text encoder resume
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        parts["vae"] = AutoencoderKL.from_pretrained(args.init, subfolder="vae").eval()
        parts["unet"] = UNet2DConditionModel.from_pretrained(args.init, subfolder="unet")
        parts["text_encoder"] = CLIPTextModel.from_pretrained(args.init, subfolder="text_encoder")
        vae_loss = float("nan")
        latents = encode_all(parts["vae"], images)
        scale = parts["vae"].config.scaling_factor
    else:
        vae_loss = train_vae(parts["vae"], images, args.vae_steps, args.batch, 2e-3, gen)
        latents = encode_all(parts["vae"], images)
        mean, std = whiten_latent_space(parts["vae"], latents)
        log.info("latent channel means %s, stds %s folded into the VAE", mean.tolist(), std.tolist())
        latents = (latents - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # what the whitened VAE encodes
        scale = parts["vae"].config.scaling_factor
    log.info(
        "vae loss %.4f, latent mean %.3f std %.3f, scaling_factor %.4f", vae_loss, latents.mean(), latents.std(), scale
    )
    t_vae = time.time() - t_start

    def snapshot(ema_unet, ema_text, step):  # EMA weights so far, to evaluate or keep if the run is cut short
        save_pipeline(
            out.parent / f"{out.name}-snapshot", parts["vae"], ema_text, tokenizer, ema_unet, parts["scheduler"]
        )
        log.info("snapshot after %d steps written to %s-snapshot", step, out)

    unet, text_encoder, losses = train_unet(
        parts["unet"], parts["text_encoder"], tokenizer, latents * scale, captions, args, gen, snapshot
    )
    save_pipeline(out, parts["vae"], text_encoder, tokenizer, unet, parts["scheduler"])
    minutes = (time.time() - t_start) / 60
    record = dict(
        vars(args),
        vae_loss=vae_loss,
        vae_minutes=t_vae / 60,
        total_minutes=minutes,
        final_loss=float(np.mean(losses[-100:])),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("done in %.1f min: %s", minutes, record)


if __name__ == "__main__":
    main()
