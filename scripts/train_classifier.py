"""Train the Fashion-MNIST classifier that benchmarks/tiny_quality.py uses to judge generated images.

python scripts/train_classifier.py   # writes diffusia/assets/fmnist_classifier.safetensors
"""

import argparse
import json
import logging
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusia.data.classifier import WEIGHTS, FashionClassifier
from diffusia.data.fashion_mnist import coloured_split
from diffusia.fileio import atomic_path

log = logging.getLogger("train_classifier")


def evaluate(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(WEIGHTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    t0 = time.time()
    xtr, ytr, _, _ = coloured_split("train", seed=args.seed + 1)
    xte, yte, _, _ = coloured_split("test", seed=args.seed + 2)
    xtr, ytr, xte, yte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    model = FashionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(xtr) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(len(xtr) // args.batch):
            idx = perm[i * args.batch : (i + 1) * args.batch]
            xb = xtr[idx] * (0.5 + 0.5 * torch.rand(len(idx), 1, 1, 1, generator=gen))  # brightness jitter
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log.info("epoch %d loss %.3f test acc %.4f", epoch, loss.item(), evaluate(model, xte, yte))
    acc = evaluate(model, xte, yte)
    with atomic_path(args.out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    log.info("test accuracy %.4f in %.1f min", acc, (time.time() - t0) / 60)
    print(json.dumps({"test_accuracy": acc, "minutes": (time.time() - t0) / 60}))


if __name__ == "__main__":
    main()
