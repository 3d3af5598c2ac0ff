"""benchmarks/train_throughput.py: roofline, cache vs JPEG rows and the efficiency arithmetic."""

from __future__ import annotations

import benchlib
import pytest
import train_throughput

from dldl.models import create_model


def test_rows_and_efficiency_on_synthetic_faces():
    res = train_throughput.run([("tiny_age_net", 32, 4)], threads=[1], steps=1, warmup=0, root=None, pool=8, gemm_n=128,
                               conv_batch=1)
    peak = res["roofline"][0]
    assert peak["roofline_gflops"] == max(peak["gemm_gflops"], *peak["conv_gflops"].values()) > 0
    assert res["settings"]["faces"] == "synthetic JPEGs" and res["decode"][0]["cache_size"] == 36
    rows = {r["source"]: r for r in res["rows"]}
    assert set(rows) == {"cache", "jpeg"}
    fwd = benchlib.forward_flops(create_model("tiny_age_net"), 32)
    for r in rows.values():
        assert r["forward_gflops"] == round(fwd / 1e9, 4)
        assert r["efficiency_pct"] == pytest.approx(100 * 3 * fwd * r["images_per_s"] / 1e9 / peak["roofline_gflops"], abs=0.2)
    assert "| tiny_age_net | 32 | 4 | 1 | jpeg |" in train_throughput.markdown(res)


def test_forward_flops_of_a_conv_and_head():
    # TinyAgeNet at 32 px: 13 convs + the head; the first conv alone is 2 * 3 * 16 * 9 * 32 * 32
    assert benchlib.forward_flops(create_model("tiny_age_net"), 32) > 2 * 3 * 16 * 9 * 32 * 32
    assert benchlib.forward_flops(create_model("tiny_age_net"), 64) == pytest.approx(
        4 * benchlib.forward_flops(create_model("tiny_age_net"), 32), rel=0.01)
