"""benchmarks/face_latency.py: every model gets a time for both views, and the table renders."""

from __future__ import annotations

import face_latency


def test_each_model_is_timed_one_view_and_with_tta(tiny_run):
    models = ["tiny_age_net-utkface", str(tiny_run / "run" / "best.pt")]
    rows = face_latency.measure(models, threads=1, rounds=1, calls=2)
    assert [r["model"] for r in rows] == models and [r["input_size"] for r in rows] == [64, 32]
    assert all(r["one_view_ms"] > 0 and r["tta_ms"] > 0 for r in rows)
    md = face_latency.markdown({"rows": rows})
    assert md.splitlines()[0].startswith("| model | input px |") and f"| {models[1]} | 32 | 1 |" in md
