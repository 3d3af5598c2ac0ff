"""benchmarks/generalization.py's scoring: errors to a label or an interval, by person, by band; the
held-out mean over unseen sources; the leave-one-source-out summary; the temperature re-read."""

from __future__ import annotations

from pathlib import Path

import generalization as g
import numpy as np
import pytest

from dldl.data.samples import Sample


def sample(label, interval=None, person=None):
    return Sample(Path("x.jpg"), float(label), interval=interval, meta={"person": person} if person else {})


def rec(estimate):
    return {"found": True, "estimate": float(estimate), "interval": [estimate - 5, estimate + 5]}


def test_score_errors_bands_and_children():
    samples = [sample(5), sample(15), sample(25), sample(40)]
    r = g.score([rec(7), rec(14), rec(30), {"found": False}], samples)
    assert r["found"] == 3 and r["photos"] == 4
    assert r["mae"] == pytest.approx((2 + 1 + 5) / 3) and r["bias"] == pytest.approx((2 - 1 + 5) / 3)
    assert r["mae_interval"] == r["mae"]  # exact ages: the error to the label
    assert r["mae_0_12"] == 2 and r["mae_13_19"] == 1 and r["count_0_12"] == 1
    assert r["bands"] == {"0": {"bias": 2.0, "count": 1}, "10": {"bias": -1.0, "count": 1}, "20": {"bias": 5.0, "count": 1}}
    assert "people" not in r and "in_group" not in r


def test_score_intervals_and_people():
    samples = [sample(28.5, (25, 32), "u/1"), sample(28.5, (25, 32), "u/1"), sample(1, (0, 2), "u/2")]
    r = g.score([rec(30), rec(35), rec(5)], samples)
    assert r["mae_interval"] == pytest.approx((0 + 3 + 3) / 3)  # 0 inside the interval
    assert r["people"] == 2 and r["mae_interval_by_person"] == pytest.approx(((0 + 3) / 2 + 3) / 2)
    assert r["in_group"] == pytest.approx(1 / 3)
    assert g.decision_error(r) == r["mae_interval_by_person"]


def test_held_out_mean_counts_each_unseen_source_once():
    per_set = {"utkface coral_test": {"mae_interval": 4.0}, "utkface full_test": {"mae_interval": 6.0},
               "fgnet all": {"mae_interval": 3.0}, "adience all": {"mae_interval": 9.0, "mae_interval_by_person": 1.0}}
    assert g.held_out_mean(per_set, ["adience"]) == pytest.approx((5.0 + 3.0) / 2)
    assert g.held_out_mean(per_set, ["fgnet", "adience"]) == pytest.approx(5.0)
    assert g.held_out_mean(per_set, []) == pytest.approx((5.0 + 3.0 + 1.0) / 3)
    assert g.held_out_mean(per_set, None) is None  # unknown training sources: no held-out mean
    assert g.held_out_mean(per_set, ["utkface", "fgnet", "adience"]) is None


def test_loso_table_per_recipe_and_in_domain_marks():
    results = {"a-no-utk": {"utkface full_test": {"mae_interval": 6.0, "mae": 6.0, "bias": 1.0}, "aaf val": {"mae_interval": 2.0}},
               "a-no-aaf": {"utkface full_test": {"mae_interval": 4.0}, "aaf val": {"mae_interval": 5.0, "mae": 5.0, "bias": -1.0}},
               "b-no-utk": {"utkface full_test": {"mae_interval": 7.0}}}
    sources = {"a-no-utk": {"seen": ["aaf"], "recipe": "A", "held_out": ["utkface"]},
               "a-no-aaf": {"seen": ["utkface"], "recipe": "A", "held_out": ["aaf"]},
               "b-no-utk": {"seen": ["aaf"], "recipe": "B", "held_out": ["utkface"]}}
    md = g.loso_table(results, sources)
    assert "| A | 5.00 | 6.00 | 5.50 |" in md  # aaf left out 5, utkface left out 6, mean 5.5
    assert "| B | - | 7.00 | - |" in md  # one source missing: no mean
    counted = {s: {**r, "found": 1, "photos": 1} for s, r in results["a-no-utk"].items()}
    main = g.table({"a-no-utk": counted}, sources)
    assert "6.00 (+1.0) |" in main and "| aaf |" in main  # utkface held out: no star
    assert g.loso_table(results, {}) is None


def test_reread_sharpens_towards_the_mode_and_shift():
    labels = np.arange(5.0)
    d = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    assert g.reread(d, labels, 1.0) == pytest.approx(2.0)
    skew = np.array([0.05, 0.5, 0.2, 0.15, 0.1])
    assert abs(g.reread(skew, labels, 4.0) - 1.0) < abs(g.reread(skew, labels, 1.0) - 1.0)
    s = g.shift([rec(10), rec(20), {"found": False}], [rec(11), rec(18), rec(3)])
    assert s == {"faces": 2, "mean_abs": 1.5, "mean_signed": -0.5}


def test_paired_difference_by_person_on_sources_neither_saw():
    photos = {"adience all": {"person": ["p1", "p1", "p2"], "bounds": [[25.0, 32.0]] * 3, "paths_sha1": ""},
              "aaf val": {"person": None, "bounds": [[30.0, 30.0]], "paths_sha1": ""}}
    doc = {"photos": photos, "sources": {"a": {"seen": ["aaf"]}, "b": {"seen": []}},
           "estimates": {"a": {"adience all": [35.0, 24.0, 20.0], "aaf val": [30.0]},
                         "b": {"adience all": [34.0, 25.0, 22.0], "aaf val": [50.0]}}}
    r = g.paired_difference(doc, "a", "b")
    assert r["sources"] == ["adience"] and r["units"] == {"adience all": 2}  # aaf: a saw it; two people
    assert r["a"] == "a" and r["b"] == "b"
    assert r["mean_a"] == pytest.approx(((3 + 1) / 2 + 5) / 2) and r["mean_b"] == pytest.approx((2 / 2 + 3) / 2)
    assert r["difference"] == pytest.approx(-1.5)
    assert r["ci95"][0] <= -1.5 <= r["ci95"][1] and r["share_b_better"] == 1.0  # b better for both people
    with pytest.raises(ValueError, match="no per-photo estimates of c"):
        g.paired_difference({**doc, "sources": {**doc["sources"], "c": {"seen": []}}}, "a", "c")
    with pytest.raises(ValueError, match="sources a saw are unknown"):
        g.paired_difference({**doc, "sources": {"a": {"seen": None}, "b": {"seen": []}}}, "a", "b")


def test_render_refuses_a_missing_input_and_writing_over_one(tmp_path, capsys):
    doc = tmp_path / "run.json"
    doc.write_text('{"per_set": 0, "results": {}}\n')
    before = doc.read_bytes()
    with pytest.raises(SystemExit, match=r"^error: --render .*absent.json: file not found$"):
        g.main(["--render", str(tmp_path / "absent.json")])
    with pytest.raises(SystemExit) as e:
        g.main(["--render", str(doc), "--json", str(doc)])
    assert e.value.code == 2 and "--json" in capsys.readouterr().err and doc.read_bytes() == before
