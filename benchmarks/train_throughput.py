"""Training throughput (images/s) per model and input size, against this machine's roofline.

One optimisation step = a uint8 batch + augmentation + forward + DLDL-v2 loss + backward + Adam,
channels_last, as in ``dldl.training``; median over timed steps after warm-up. In the same run:

* roofline: peak fp32 GFLOP/s of a large matrix product (``n x n @ n x n``) and of large 3x3
  convolutions (VGG stage shapes, channels_last, forward), per thread count; efficiency =
  achieved model FLOP/s (3 x forward FLOPs per image x images/s: forward + backward) / roofline,
  the roofline being the larger of the two peaks;
* data pipeline: batches gathered from the decoded uint8 cache (as ``dldl.training`` does) vs
  decoded from JPEG files with PIL inside the loop (one process), and the decode time per image.
  Faces: UTKFace ``coral_train`` when ``--root`` exists, else synthetic JPEGs.

    python benchmarks/train_throughput.py --sizes 64 224 --models tiny_age_net thin_age_net \
        --json docs/bench/train_throughput.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dldl.data.augment import AugmentConfig, train_transform
from dldl.data.images import load_face
from dldl.data.datasets import load_dataset
from dldl.labels import LabelSet, gaussian_distribution
from dldl.losses import dldl_v2_loss
from dldl.models import create_model

Batches = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # -> uint8 (N, 3, S, S) images, (N,) labels
CONV_SHAPES = ((64, 112), (128, 56), (256, 28))  # (channels in = out, side): VGG16 stages 2-4, equal FLOPs


# --------------------------------------------------------------------------- roofline


def peak_gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """fp32 GFLOP/s of ``(n, n) @ (n, n)`` (2 n^3 FLOPs), median over ``reps``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = benchlib.timed(lambda: torch.mm(a, b), warmup=1, min_reps=reps, max_reps=reps)
    return 2 * n**3 / t["median_s"] / 1e9


def peak_conv_gflops(batch: int = 32, reps: int = 3) -> dict[str, float]:
    """fp32 GFLOP/s of forward 3x3 convolutions (padding 1, channels_last) at :data:`CONV_SHAPES`."""
    out = {}
    for c, side in CONV_SHAPES:
        x = torch.randn(batch, c, side, side).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            t = benchlib.timed(lambda x=x, w=w: F.conv2d(x, w, padding=1), warmup=1, min_reps=reps, max_reps=reps)
        out[f"{c}ch_{side}px"] = 2 * batch * c * c * 9 * side * side / t["median_s"] / 1e9
    return out


def roofline(threads: int, gemm_n: int = 2048, conv_batch: int = 32) -> dict[str, Any]:
    torch.set_num_threads(threads)
    gemm, conv = peak_gemm_gflops(gemm_n), peak_conv_gflops(conv_batch)
    return {"threads": threads, "gemm_gflops": round(gemm, 1), "conv_gflops": {k: round(v, 1) for k, v in conv.items()},
            "roofline_gflops": round(max(gemm, *conv.values()), 1)}


# --------------------------------------------------------------------------- data


def face_files(root: Path | None, count: int, tmp: Path) -> tuple[list[Path], str]:
    """``count`` face JPEGs: spread over UTKFace ``coral_train`` if ``root`` exists, else synthetic
    200x200 JPEGs written to ``tmp``. Returns the paths and where they came from."""
    if root is not None and root.exists():
        train = load_dataset("utkface", root, "coral_train").samples
        return [s.path for s in train[:: max(1, len(train) // count)][:count]], f"UTKFace coral_train ({root})"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        img = np.clip(rng.normal(128, 40, (200, 200, 3)), 0, 255).astype(np.uint8)
        paths.append(tmp / f"face_{i:04d}.jpg")
        Image.fromarray(img).save(paths[-1], quality=90)
    return paths, "synthetic JPEGs"


def decode_pool(paths: list[Path], size: int) -> tuple[np.ndarray, float]:
    """The faces decoded to ``(N, size, size, 3)`` uint8 with ``load_face`` (what the cache holds),
    and the median decode time per image in ms (PIL, one process)."""
    times, arrays = [], []
    for p in paths:
        t0 = time.perf_counter()
        arrays.append(load_face(p, size))
        times.append(time.perf_counter() - t0)
    return np.stack(arrays), 1e3 * statistics.median(times)


def cache_batches(pool: np.ndarray, batch: int, seed: int = 0) -> Batches:
    """Random batches gathered from the decoded uint8 array, as ``dldl.training`` does."""
    gen = torch.Generator().manual_seed(seed)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(pool), (batch,), generator=gen)
        return torch.from_numpy(pool[idx.numpy()]).permute(0, 3, 1, 2), torch.randint(0, 101, (batch,), generator=gen).float()

    return next_batch


def jpeg_batches(paths: list[Path], size: int, batch: int, seed: int = 0) -> Batches:
    """Random batches decoded from the JPEG files inside the loop (PIL, one process)."""
    gen = torch.Generator().manual_seed(seed)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(paths), (batch,), generator=gen).tolist()
        images = np.stack([load_face(paths[i], size) for i in idx])
        return torch.from_numpy(images).permute(0, 3, 1, 2), torch.randint(0, 101, (batch,), generator=gen).float()

    return next_batch


# --------------------------------------------------------------------------- training steps


def measure(model_name: str, size: int, batch: int, steps: int, warmup: int, batches: Batches | None = None) -> dict:
    """Median wall time of one full training step (batch fetch included) and images/s.

    ``batches``: where the uint8 batches come from; default random pixels at ``size * 9 // 8``.
    """
    labels = LabelSet(0, 100, 1)
    model = create_model(model_name).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    if batches is None:
        cache = size * 9 // 8
        pool = torch.randint(0, 256, (batch, cache, cache, 3), dtype=torch.uint8).numpy()
        batches = cache_batches(pool, batch)
    aug = AugmentConfig(output_size=size)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        images, y = batches()
        x = train_transform(images, aug, gen).contiguous(memory_format=torch.channels_last)
        loss = dldl_v2_loss(model(x), gaussian_distribution(y, 2.0, labels), y, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"model": model_name, "input_size": size, "batch": batch, "steps": steps,
            "median_step_s": round(med, 4), "images_per_s": round(batch / med, 1)}


def run(configs: list[tuple[str, int, int]], threads: list[int], steps: int = 5, warmup: int = 2, root: Path | None = None,
        pool: int = 512, sources: Sequence[str] = ("cache", "jpeg"), gemm_n: int = 2048, conv_batch: int = 32,
        with_roofline: bool = True) -> dict[str, Any]:
    """Training rows for each ``(model, input size, batch)`` x thread count x data source, with
    the roofline measured first at each thread count."""
    start = torch.get_num_threads()
    out: dict[str, Any] = {"machine": benchlib.machine(), "roofline": [], "rows": [], "decode": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths, origin = face_files(root, pool, Path(tmp))
        out["settings"] = {"steps": steps, "warmup": warmup, "faces": origin, "pool": len(paths), "sources": list(sources)}
        pools: dict[int, np.ndarray] = {}
        for cache in sorted({size * 9 // 8 for _, size, _ in configs}):
            pools[cache], ms = decode_pool(paths, cache)
            out["decode"].append({"cache_size": cache, "decode_ms_per_image": round(ms, 3)})
        for t in threads:
            peak = roofline(t, gemm_n, conv_batch) if with_roofline else None
            if peak:
                out["roofline"].append(peak)
            torch.set_num_threads(t)
            for name, size, batch in configs:
                fwd = benchlib.forward_flops(create_model(name), size)
                cache = size * 9 // 8
                for source in sources:
                    feed = cache_batches(pools[cache], batch) if source == "cache" else jpeg_batches(paths, cache, batch)
                    r = measure(name, size, batch, steps, warmup, feed)
                    achieved = 3 * fwd * r["images_per_s"] / 1e9
                    r.update(threads=t, source=source, forward_gflops=round(fwd / 1e9, 4), achieved_gflops=round(achieved, 1),
                             efficiency_pct=round(100 * achieved / peak["roofline_gflops"], 1) if peak else None)
                    out["rows"].append(r)
                    print(f"train: {name} {size} px batch {batch} {t} thr {source}: {r['images_per_s']} img/s", flush=True)
    torch.set_num_threads(start)
    return out


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    parts = ["### Roofline (peak fp32 GFLOP/s measured in the same run)\n"]
    if result["roofline"]:
        shapes = list(result["roofline"][0]["conv_gflops"])
        parts.append(benchlib.md_table(["threads", "GEMM 2048^3"] + [f"conv3x3 {k}" for k in shapes] + ["roofline"],
                                       [[r["threads"], r["gemm_gflops"]] + [r["conv_gflops"][k] for k in shapes] + [r["roofline_gflops"]]
                                        for r in result["roofline"]]))
    parts += [f"\n### Training throughput (median of {s['steps']} steps after {s['warmup']} warm-up; faces: {s['faces']})\n",
              "Efficiency = 3 x forward FLOPs x images/s / roofline. Source `cache`: batches gathered from the decoded "
              "uint8 array (what `dldl train` does); `jpeg`: each batch decoded from JPEG files with PIL in the loop. "
              "Target: >= 70% of the roofline on CPU.\n",
              benchlib.md_table(["model", "input", "batch", "threads", "source", "images/s", "step s", "GFLOP/s", "efficiency %"],
                                [[r["model"], r["input_size"], r["batch"], r["threads"], r["source"], r["images_per_s"],
                                  r["median_step_s"], r["achieved_gflops"], r["efficiency_pct"]] for r in result["rows"]]),
              "\nJPEG decode + resize per image (PIL, one process, median): "
              + ", ".join(f"{d['decode_ms_per_image']} ms at {d['cache_size']} px" for d in result["decode"])]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny_age_net", "thin_age_net"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128, 224])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()])
    ap.add_argument("--root", type=Path, default=benchlib.SHARED_DATA / "utkface", help="UTKFace folder (else synthetic JPEGs)")
    ap.add_argument("--pool", type=int, default=512, help="faces to draw batches from")
    ap.add_argument("--sources", nargs="+", default=["cache", "jpeg"], choices=["cache", "jpeg"])
    ap.add_argument("--no-roofline", action="store_true", help="skip the peak GEMM / conv measurement")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    configs = [(name, size, args.batch) for size in args.sizes for name in args.models]
    result = run(configs, args.threads, args.steps, args.warmup, args.root, args.pool, args.sources, with_roofline=not args.no_roofline)
    benchlib.finish(result, args.json, markdown)


if __name__ == "__main__":
    main()
