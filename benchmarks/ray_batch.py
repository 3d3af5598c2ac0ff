"""Many photos on Ray against the plain CLI: ``dldl batch`` with 1 and 2 workers on a local cluster,
and ``dldl predict --json``, on the same 500 photos, timed as whole processes.

    python benchmarks/ray_batch.py                  # about 5 minutes on a 2-core machine
    python benchmarks/run_all.py --render           # then: its section and targets in docs/BENCHMARKS.md

The photos: the bundled photos and face samples (``src/dldl/assets``), each copied many times at
another size (photos 300-500 px, samples 128-256 px; every other one mirrored) as JPEGs (quality 90)
in a temporary folder, 500 in all. Each command runs on the whole folder and on its first 20 photos;
the time a photo costs once everything has started is ``(wall of 500 - wall of 20) / 480``, so the
one-off costs (Python, the model, Ray's local cluster, the actors loading their models) are left out
of the rates, and reported apart as the whole process's wall time.

- ``cli``: ``dldl predict DIR --json`` as a user runs it (ONNX Runtime with a thread a core, the
  detector on one thread);
- ``cli, 1 core``: the same under ``taskset -c 0``, the one core a single worker has;
- ``ray, N workers``: ``dldl batch DIR --parquet OUT --workers N`` on a local cluster (N actors of one
  CPU and one ONNX Runtime thread each; the cluster gets N + 1 CPUs).

Targets (issue 41): 2 workers >= 1.7x the photos/s of 1 worker; Ray's cost a photo (1 worker against
the CLI) <= 15% more than the CLI's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

SRC = benchlib.REPO / "src" / "dldl" / "assets"
COUNT, SMALL = 500, 20


def make_photos(folder: Path, count: int = COUNT) -> list[Path]:
    """``count`` JPEGs made from the bundled photos and samples at other sizes (see the module docstring)."""
    from PIL import Image, ImageOps

    sources = sorted((SRC / "photos").glob("*.jpg")) + sorted((SRC / "samples").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        src = sources[i % len(sources)]
        step = i // len(sources)  # 0, 1, 2, ...: a new size for each round over the sources
        with Image.open(src) as im:
            im = im.convert("RGB")
            low, high = (300, 500) if src.parent.name == "photos" else (128, 256)
            side = low + (step * 37) % (high - low + 1)
            im = im.resize((side, side), Image.LANCZOS)
            if step % 2:
                im = ImageOps.mirror(im)
            path = folder / f"{i:04d}-{src.stem[:24]}.jpg"
            im.save(path, quality=90)
            made.append(path)
    return made


def commands(folder: Path, out: Path) -> dict[str, list[str]]:
    dldl = [sys.executable, "-m", "dldl.cli"]
    return {"cli": [*dldl, "predict", str(folder), "--json"],
            "cli, 1 core": ["taskset", "-c", "0", *dldl, "predict", str(folder), "--json"],
            "ray, 1 worker": [*dldl, "batch", str(folder), "--parquet", str(out), "--workers", "1"],
            "ray, 2 workers": [*dldl, "batch", str(folder), "--parquet", str(out), "--workers", "2"]}


def timed_run(cmd: list[str], out: Path) -> tuple[float, str]:
    """Wall seconds of one whole process (its output folder emptied first), and its stdout's last line."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(benchlib.REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return wall, (lines[0] if lines and "batch" in cmd else "")


def run(count: int = COUNT, small: int = SMALL, repeats: int = 1) -> dict[str, Any]:
    """Every command on ``count`` and on ``small`` photos, ``repeats`` times interleaved; medians."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dldl-ray-bench-") as tmp:
        full, few, out = Path(tmp) / "photos", Path(tmp) / "few", Path(tmp) / "out"
        photos = make_photos(full, count)
        few.mkdir()
        for p in photos[:small]:
            shutil.copy(p, few / p.name)
        walls: dict[str, dict[str, list[float]]] = {}
        notes: dict[str, str] = {}
        for _ in range(repeats):
            for (name, cmd_full), cmd_few in zip(commands(full, out).items(), commands(few, out).values()):
                w_few, _ = timed_run(cmd_few, out)
                w_full, summary = timed_run(cmd_full, out)
                walls.setdefault(name, {"full": [], "few": []})
                walls[name]["full"].append(w_full)
                walls[name]["few"].append(w_few)
                notes[name] = summary
                print(f"ray_batch: {name}: {count} photos {w_full:.1f} s, {small} photos {w_few:.1f} s", flush=True)
        for name, w in walls.items():
            full_s, few_s = statistics.median(w["full"]), statistics.median(w["few"])
            per_photo = (full_s - few_s) / (count - small)
            rows.append({"command": name, "photos": count, "wall_s": round(full_s, 2), "wall_small_s": round(few_s, 2),
                         "photos_per_s_whole": round(count / full_s, 2), "ms_per_photo": round(1e3 * per_photo, 2),
                         "photos_per_s": round(1 / per_photo, 2), "summary": notes[name]})
    by = {r["command"]: r for r in rows}
    speedup = by["ray, 2 workers"]["photos_per_s"] / by["ray, 1 worker"]["photos_per_s"]
    overhead = by["ray, 1 worker"]["ms_per_photo"] / by["cli"]["ms_per_photo"] - 1
    overhead_1core = by["ray, 1 worker"]["ms_per_photo"] / by["cli, 1 core"]["ms_per_photo"] - 1
    return {"machine": benchlib.machine(), "settings": {"count": count, "small": small, "repeats": repeats},
            "rows": rows, "speedup_2_vs_1": round(speedup, 2), "overhead_vs_cli": round(overhead, 3),
            "overhead_vs_cli_1core": round(overhead_1core, 3)}


def targets(result: dict[str, Any]) -> list[list[Any]]:
    """``[target, measured, pass/fail]`` rows for issue 41's two speed targets."""
    by = {r["command"]: r for r in result["rows"]}
    one, two, cli = by["ray, 1 worker"], by["ray, 2 workers"], by["cli"]
    return [["`dldl batch`: 2 workers >= 1.7x the photos/s of 1 worker (2 cores)",
             f"{result['speedup_2_vs_1']}x ({two['photos_per_s']} vs {one['photos_per_s']} photos/s once started)",
             "**pass**" if result["speedup_2_vs_1"] >= 1.7 else "**fail**"],
            ["`dldl batch`: Ray's cost a photo <= 15% over the CLI's (1 worker against `dldl predict`)",
             f"{result['overhead_vs_cli']:+.1%} ({one['ms_per_photo']} vs {cli['ms_per_photo']} ms a photo once started)",
             "**pass**" if result["overhead_vs_cli"] <= 0.15 else "**fail**"]]


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    m = result["machine"]
    machine = (f"Measured on {m['cpu']} ({m['logical_cpus']} logical CPUs), commit {m['commit']}, {m['date']}, "
               f"1-minute load average at the end: {m['load_average_1m']} (a quiet machine reads about 0).\n\n")
    head = machine + (f"### `dldl batch` on a local Ray cluster against `dldl predict --json`: {s['count']} photos "
            f"(bundled photos and samples at other sizes), whole processes, median of {s['repeats']}\n\n"
            f"photos/s and ms/photo once started: `(wall of {s['count']} - wall of {s['small']}) / {s['count'] - s['small']}`; "
            "the wall columns include start-up (Python, the model, for Ray the local cluster and the actors). "
            "Command: `python benchmarks/ray_batch.py`.\n\n")
    table = benchlib.md_table(
        ["command", f"wall s, {s['count']} photos", f"wall s, {s['small']} photos", "photos/s, whole process",
         "ms a photo once started", "photos/s once started"],
        [[r["command"], r["wall_s"], r["wall_small_s"], r["photos_per_s_whole"], r["ms_per_photo"], r["photos_per_s"]]
         for r in result["rows"]])
    tail = (f"\n\n2 workers / 1 worker: {result['speedup_2_vs_1']}x; Ray's cost a photo, 1 worker against the CLI: "
            f"{result['overhead_vs_cli']:+.1%} (against the CLI on 1 core: {result['overhead_vs_cli_1core']:+.1%}).\n")
    return head + table + tail


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=COUNT)
    ap.add_argument("--small", type=int, default=SMALL)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, default=benchlib.REPO / "docs" / "bench" / "ray_batch.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.count, args.small, args.repeats)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    benchlib.finish(result, args.json, markdown)


if __name__ == "__main__":
    main()
