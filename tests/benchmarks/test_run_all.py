"""benchmarks/run_all.py: the report renders from partial results, and --render rebuilds it from JSON."""

from __future__ import annotations

import benchlib
import run_all
import train_throughput


def test_render_from_json(tmp_path):
    res = train_throughput.run([("tiny_age_net", 64, 2)], threads=[1], steps=1, warmup=0, root=None, pool=4, gemm_n=128,
                               conv_batch=1, sources=["cache"])
    res.update(mode="quick", wall_s=1.0)
    benchlib.write_json(tmp_path / "train.json", res)
    run_all.main(["--render", "--out-dir", str(tmp_path), "--md", str(tmp_path / "B.md")])
    md = (tmp_path / "B.md").read_text()
    assert "SMOKE SETTINGS" in md and "**Machine**" in md and res["machine"]["cpu"] in md
    assert ">= 70% of the measured roofline, CPU profile (tiny_age_net, 64 px)" in md
    assert "not run: no GPU lent yet" in md and "## 4. Training throughput" in md
    assert "## 1-2." not in md  # no inference results: no section
