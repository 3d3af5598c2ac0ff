"""Helpers shared by the benchmark scripts: timing (medians over repeats), FLOP counting, the machine's
description, and Markdown tables. Scripts import it as a sibling module (``import benchlib``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def timed(fn: Callable[[], Any], warmup: int = 1, min_reps: int = 3, max_reps: int = 20, budget_s: float = 5.0) -> dict:
    """Run ``fn`` ``warmup`` times, then at least ``min_reps`` and at most ``max_reps`` timed times,
    stopping after ``min_reps`` once ``budget_s`` seconds of timed runs are spent.

    Returns ``{"median_s", "min_s", "reps"}`` (wall-clock seconds per call).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < max_reps and (len(times) < min_reps or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times)}


def forward_flops(model: nn.Module, size: int) -> int:
    """FLOPs of one forward pass of one ``(1, 3, size, size)`` image, counted by
    ``torch.utils.flop_counter`` (2 x multiply-adds of convolutions and matrix products; BatchNorm,
    ReLU and pooling are not counted)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    return int(counter.get_total_flops())


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _head_commit() -> str | None:
    """The commit checked out, read from ``.git`` (no git command is run; in a worktree ``.git`` is
    a file naming its git folder, whose branches live in the main one); ``None`` if unknown."""
    try:
        git = REPO / ".git"
        if git.is_file():  # "gitdir: /repo/.git/worktrees/NAME"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        common = git / (git / "commondir").read_text().strip() if (git / "commondir").exists() else git
        for folder in (git, common):
            if (folder / head[5:]).is_file():
                return (folder / head[5:]).read_text().strip()[:12]
        packed = (common / "packed-refs").read_text().splitlines()
        return next((line.split()[0][:12] for line in packed if line.endswith(" " + head[5:])), None)
    except (OSError, IndexError):
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, load, library versions, commit."""
    import numpy
    import onnxruntime

    return {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "cpu_flags": _cpu_flags(), "memory_gb": _mem_total_gb(),
            "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "commit": _head_commit(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON, one item a line (``indent=None``: on one line, for per-photo lists)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=indent, separators=None if indent else (",", ":")) + "\n")
    return p


def finish(result: dict[str, Any], json_path: str | Path | None, markdown: Any) -> None:
    """The end of a benchmark's ``main``: write ``result`` to ``json_path`` (when given) and print
    ``markdown(result)``."""
    if json_path:
        write_json(json_path, result)
    print(markdown(result))


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; ``None`` cells print as ``n/a``."""
    cell = lambda v: "n/a" if v is None else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str | None:
    """``value`` rounded for a table (``None`` stays ``None``)."""
    return None if value is None else f"{value:.{digits}f}"
