"""benchmarks/pipeline.py: stage times add up, the stopwatch times only its method."""

from __future__ import annotations

import time

import pipeline
import pytest


def test_stopwatch_times_only_its_method():
    class Slow:
        value = 5

        def work(self) -> int:
            time.sleep(0.02)
            return 1

    watched = pipeline.Stopwatch(Slow(), "work")
    assert watched.value == 5 and watched.seconds == 0.0
    assert watched.work() == 1 and watched.seconds >= 0.02


def test_pipeline_on_the_bundled_photos():
    pytest.importorskip("yuface")
    res = pipeline.run(photos=pipeline.BUNDLED_PHOTOS, limit=2, runtimes=["torch", "onnxruntime"], threads=[1], repeats=1)
    assert [r["runtime"] for r in res["rows"]] == ["torch", "onnxruntime"]
    for r in res["rows"]:
        assert r["photos"] == 2 and r["faces"] >= 2 and r["photos_per_s"] > 0
        assert sum(r["stage_share_pct"].values()) == pytest.approx(100, abs=0.5)
        assert r["slowest_stage"] in pipeline.STAGES
    assert "| torch | 1 |" in pipeline.markdown(res)
