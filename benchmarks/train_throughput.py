"""Training throughput (images/s) of each architecture at each input size on this machine.

One optimisation step = augmentation of a uint8 batch + forward + DLDL-v2 loss + backward + Adam,
channels_last, as in ``dldl.train``. Reports the median over timed steps after warm-up.

    python benchmarks/train_throughput.py --sizes 64 112 224 --models tiny_age_net thin_age_net \
        --json docs/bench/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from dldl.data.augment import AugmentConfig, train_transform
from dldl.labels import LabelSet, gaussian_distribution
from dldl.losses import dldl_v2_loss
from dldl.models import create_model


def measure(model_name: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    labels = LabelSet(0, 100, 1)
    model = create_model(model_name).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    cache = size * 9 // 8
    images = torch.randint(0, 256, (batch, cache, cache, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    y = torch.randint(0, 101, (batch,)).float()
    target = gaussian_distribution(y, 2.0, labels)
    aug = AugmentConfig(output_size=size)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x = train_transform(images, aug, gen).contiguous(memory_format=torch.channels_last)
        loss = dldl_v2_loss(model(x), target, y, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"model": model_name, "input_size": size, "batch": batch, "steps": steps,
            "median_step_s": round(med, 4), "images_per_s": round(batch / med, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny_age_net", "thin_age_net"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128, 224])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print("| model | input | batch | images/s | median step (s) |\n|---|---|---|---|---|")
    for size in args.sizes:
        for name in args.models:
            r = measure(name, size, args.batch, args.steps, args.warmup)
            rows.append(r)
            print(f"| {name} | {size} | {args.batch} | {r['images_per_s']} | {r['median_step_s']} |", flush=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpu_count": torch.get_num_threads(),
            "torch": torch.__version__, "threads": args.threads}
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
