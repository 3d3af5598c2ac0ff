"""benchmarks/memory.py: peak RSS of a child process, independent of the caller's own size."""

from __future__ import annotations

import sys

import memory


def test_peak_rss_of_a_child_not_of_its_parent():
    ballast = bytearray(300_000_000)  # the caller is large; the measured child must not inherit that
    small = memory.peak_rss([sys.executable, "-c", "pass"])
    big = memory.peak_rss([sys.executable, "-c", "x = bytearray(200_000_000)"])
    assert small["returncode"] == 0 and small["peak_rss_mb"] < 100
    assert 190 < big["peak_rss_mb"] < 300
    failed = memory.peak_rss([sys.executable, "-c", "import sys; sys.exit('no such thing')"])
    assert failed["returncode"] == 1 and failed["error"] == "no such thing"
    del ballast


def test_training_steps_command_runs():
    label, cmd, note = memory.commands(["cpu"], steps=1, threads=1, batch=2)[-1]
    r = memory.peak_rss(cmd)
    assert r["returncode"] == 0, r["error"]
    assert r["peak_rss_mb"] > 100 and "batch 2" in label and "computed" in note
