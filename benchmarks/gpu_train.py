"""ThinAgeNet, the paper's recipe (224 px, 60 epochs, batch 128, Adam, decay x0.1 at epoch 30) on
UTKFace coral_train, timed on a lent GPU; prints images/s, epoch time and the test MAE as JSON.

Everything runs through ``dldl.training.train``: the archive written by ``pack_utkface.py`` is unpacked
as a UTKFace folder, decoded once by ``--workers`` processes into the uint8 cache at the archive's
side, which is kept on the GPU (``cache_on_device``); augmentation runs on the GPU as batched torch
ops; bf16 autocast and channels_last are the training loop's defaults on CUDA. Before training,
the GPU's peak bf16 GEMM and 3x3-conv TFLOP/s are measured, so the run reports its efficiency
(3 x forward FLOPs x images/s / peak) like the CPU benchmark does.

On the device machine (its python3 has torch; dldl is used from ``src/``)::

    PYTHONPATH=src python3 benchmarks/gpu_train.py --archive .pack/utkface_coral.npz --out $OUT

Per-epoch rows are appended to ``OUT/run/log.jsonl`` as they finish, so a run cut short still
leaves its images/s and epoch times. On a CPU, as a smoke test: ``--epochs 1 --limit 256 --size 64``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import torch
import torch.nn.functional as F
from pack_utkface import read_pack, unpack

from dldl.models import create_model
from dldl.training import PROFILES, TrainConfig, train


def gpu_roofline(device: torch.device, reps: int = 10) -> dict[str, Any]:
    """Peak bf16 TFLOP/s of an 8192^3 matrix product and of a 3x3 conv (128 ch, 56 px, batch 128,
    channels_last): mean over ``reps`` calls after 3 warm-up calls."""

    def tflops(fn, flops: float) -> float:
        for _ in range(3):
            fn()
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize(device)
        return flops * reps / (time.perf_counter() - t0) / 1e12

    try:
        a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
        x = torch.randn(128, 128, 56, 56, device=device, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        w = torch.randn(128, 128, 3, 3, device=device, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        gemm = tflops(lambda: a @ b, 2 * 8192**3)
        conv = tflops(lambda: F.conv2d(x, w, padding=1), 2 * 128 * 128 * 128 * 9 * 56 * 56)
    except Exception as e:  # noqa: BLE001 - the training run matters more than this number
        return {"error": f"{type(e).__name__}: {e}"[:200]}
    return {"gemm_bf16_tflops": round(gemm, 1), "conv_bf16_tflops": round(conv, 1), "roofline_tflops": round(max(gemm, conv), 1)}


def scratch_dir(need_bytes: int) -> str | None:
    """``/dev/shm`` (memory) when it has room for the unpacked faces and their decoded cache, else the
    default temporary folder: on a slow disk, writing and deleting the cache took a minute here."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > 1.5 * need_bytes else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=Path(".pack/utkface_coral.npz"))
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_train"), help="folder for gpu_train.json and the run")
    ap.add_argument("--model", default="thin_age_net")
    ap.add_argument("--size", type=int, default=PROFILES["paper"]["input_size"])
    ap.add_argument("--epochs", type=int, default=PROFILES["paper"]["epochs"])
    ap.add_argument("--batch", type=int, default=PROFILES["paper"]["batch_size"])
    ap.add_argument("--limit", type=int, default=None, help="first N training faces (smoke tests)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes decoding the archive")
    args = ap.parse_args()
    t_start = time.perf_counter()
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    peak = gpu_roofline(device) if cuda else None
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    args.out.mkdir(parents=True, exist_ok=True)
    meta = read_pack(args.archive)["meta"]
    side = meta["side"]
    need = args.archive.stat().st_size + meta["faces"] * side * side * 3
    with tempfile.TemporaryDirectory(dir=scratch_dir(need)) as tmp:
        t0 = time.perf_counter()
        root = unpack(args.archive, Path(tmp) / "utkface")
        unpack_s = time.perf_counter() - t0
        paper = PROFILES["paper"]
        cfg = TrainConfig(**{**paper, "model": args.model, "input_size": args.size, "epochs": args.epochs,
                             "lr_step": max(1, args.epochs * paper["lr_step"] // paper["epochs"]), "batch_size": args.batch,
                             "dataset": "utkface", "root": str(root), "limit": args.limit, "cache_size": side,
                             "cache_dir": str(Path(tmp) / "cache"), "workers": args.workers, "device": str(device),
                             "cache_on_device": True, "progress": False, "out_dir": str(args.out / "run")})
        t0 = time.perf_counter()
        report = train(cfg)
        train_call_s = time.perf_counter() - t0
    hist = report["history"]
    ips = statistics.median(r["images_per_s"] for r in hist)
    fwd = benchlib.forward_flops(create_model(args.model), args.size)
    achieved = 3 * fwd * ips / 1e12
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__, "model": args.model,
        "input_size": args.size, "cache_size": side, "batch": args.batch, "epochs": args.epochs,
        "images_per_s_median": ips, "epoch_s_median": statistics.median(r["seconds"] for r in hist),
        "epoch_s_first": hist[0]["seconds"], "train_s_total": round(sum(r["seconds"] for r in hist), 1),
        "unpack_s": round(unpack_s, 1), "train_call_s": round(train_call_s, 1),
        "other_s": round(train_call_s - sum(r["seconds"] for r in hist), 1),  # decode, validation, checkpoints, test
        "wall_s": round(time.perf_counter() - t_start, 1),
        "forward_gflops": round(fwd / 1e9, 3), "achieved_tflops": round(achieved, 2), "roofline": peak,
        "efficiency_pct": round(100 * achieved / peak["roofline_tflops"], 1) if peak and "roofline_tflops" in peak else None,
        "best_val_mae": report["best_val_mae"],
        "test_mae": report.get("test", {}).get("mae"), "test_mae_no_tta": report.get("test_no_flip", {}).get("mae"),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "history": hist,
    }
    (args.out / "gpu_train.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
