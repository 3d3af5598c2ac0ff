"""``dldl release``: a tiny trained run released end to end (calibrated, combined, carded,
installed into a temporary models folder), and the inputs it refuses in one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.files import file_sha256


def release_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``dldl release ARGS`` in this process (as the console script runs it): exit code, stdout, stderr."""
    from dldl import cli

    monkeypatch.setattr(sys, "argv", ["dldl", "release", *map(str, args)])
    try:
        cli.run()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, stderr)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)


def _copy(src: Path, dst: Path, noise: float = 0.0, **config) -> Path:
    """A copy of checkpoint ``src`` at ``dst``, its weights moved by ``noise`` and its config changed."""
    ck = load_checkpoint(src)
    gen = torch.Generator().manual_seed(1)
    for key in ("state_dict", "ema_state_dict"):
        if ck.get(key) and noise:
            ck[key] = {k: v + noise * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v for k, v in ck[key].items()}
    ck["config"] = {**ck["config"], **config}
    return save_checkpoint(dst, {k: v for k, v in ck.items() if k not in ("format", "format_version")})


@pytest.fixture
def card(tmp_path) -> Path:
    path = tmp_path / "card.json"
    path.write_text(json.dumps({"summary": "a toy age model", "licence": "test only"}))
    return path


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """The models folder, patched so that nothing is written into the package."""
    folder = tmp_path / "models"
    monkeypatch.setattr("dldl.hub.MODELS_DIR", folder)
    return folder


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run's folder (the release keeps its intermediates there by default)."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(tiny_run / "run" / "best.pt", folder / "best.pt")
    return folder


def test_release_rebuilds_a_model_end_to_end(tiny_run, run, card, models, tmp_path, monkeypatch, capsys):
    import dldl

    manifest = tiny_run / "data" / "manifest.csv"
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"model": "x", "dataset": "csv", "split": "", "count": 32, "mae": 9.5, "cs": [0.1, 0.2],
                                  "no_flip": {"mae": 9.7}}))
    before = file_sha256(run / "best.pt")
    code, out, err = release_cli(monkeypatch, capsys, run, "--name", "toy", "--card", card, "--models-dir", models,
                                 "--metrics", report, "--reference", f"csv:{manifest}:")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model"] == str(models / "toy.pt") and summary["kept"] == [str(run / "toy.calibrated.pt")]
    assert file_sha256(run / "best.pt") == before  # the input is never written over

    card_data = json.loads((models / "toy.json").read_text())
    assert card_data["summary"] == "a toy age model" and card_data["name"] == "toy"
    assert card_data["sha256"] == file_sha256(models / "toy.pt") and card_data["bytes"] == (models / "toy.pt").stat().st_size
    calibration = card_data["calibration"]
    assert calibration["fitted"] and calibration["fitted_on"] == 10 and calibration["tta_flip"] is True
    assert card_data["spec"]["temperature"] == calibration["temperature"] == card_data["temperature"]
    assert set(calibration["sources"]["val"]) >= {"count", "mae_before", "mae_after", "coverage_90_after"}
    assert card_data["metrics"] == [{"model": "x", "dataset": "csv", "split": "", "count": 32, "mae": 9.5,
                                     "mae_no_tta": 9.7, "source": str(report)}]
    assert card_data["run"] == {"run": str(run), "checkpoint": str(run / "best.pt"), "sha256": before}
    assert card_data["sources_seen"] == ["csv"]  # the run's own dataset, so benchmarks can mark its cells in-domain
    assert card_data["release_command"].startswith("dldl release ") and "--name toy" in card_data["release_command"]
    ref = card_data["reference_estimates"]
    assert ref["count"] == 32 and len(ref["quantiles"]) == 101 and ref["quantiles"] == sorted(ref["quantiles"])

    est = dldl.load("toy")
    assert est.spec.temperature == calibration["temperature"] and est.meta["reference_quantiles"] == ref["quantiles"]
    assert est.predict_files(sorted((tiny_run / "data").glob("*.png"))[:2]).estimate.shape == (2,)

    files = {p.name: p.read_bytes() for p in [*models.iterdir(), *run.iterdir()]}
    code, out, err = release_cli(monkeypatch, capsys, run, "--name", "toy", "--card", card, "--models-dir", models)
    assert_one_line_error(code, err, "--name toy", "toy.pt exists already", "--replace")
    assert {p.name: p.read_bytes() for p in [*models.iterdir(), *run.iterdir()]} == files  # nothing written, nothing changed

    code, out, err = release_cli(monkeypatch, capsys, run, "--name", "toy", "--card", card, "--models-dir", models,
                                 "--temperature", "2", "--replace")
    assert code == 0, err
    assert json.loads((models / "toy.json").read_text())["spec"]["temperature"] == 2.0
    assert (run / "toy.calibrated.pt").read_bytes() == files["toy.calibrated.pt"]  # kept; the new one beside it
    assert json.loads(out.strip().splitlines()[-1])["kept"] == [str(run / "toy.calibrated-2.pt")]


def test_two_runs_make_an_ensemble_of_calibrated_members_or_a_soup(tiny_run, card, models, tmp_path, monkeypatch, capsys):
    import dldl

    first = tiny_run / "run" / "best.pt"
    second = _copy(first, tmp_path / "second.pt", noise=0.05)
    out = tmp_path / "out"
    code, stdout, err = release_cli(monkeypatch, capsys, first, second, "--name", "ens", "--card", card, "--models-dir", models,
                                    "--out-dir", out, "--one-view")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["ens.calibrated.pt", "ens.ensemble.pt", "ens.member1.calibrated.pt",
                                                      "ens.member2.calibrated.pt"]
    card_data = json.loads((models / "ens.json").read_text())
    assert card_data["spec"]["architecture"] == "ensemble" and card_data["spec"]["tta_flip"] is False
    assert card_data["combined"] == {"kind": "ensemble", "members_calibrated": True}
    assert card_data["sources_seen"] == ["csv"]  # the union over the members
    members = card_data["members"]
    assert [m["run"] for m in members] == [str(first), str(second)]
    assert all(m["calibration"]["fitted"] and m["temperature"] == pytest.approx(m["calibration"]["temperature"]) for m in members)
    assert dldl.load("ens").predict_files(sorted((tiny_run / "data").glob("*.png"))[:2]).estimate.shape == (2,)

    code, stdout, err = release_cli(monkeypatch, capsys, first, second, "--name", "soup", "--card", card, "--models-dir", models,
                                    "--out-dir", out, "--soup")
    assert code == 0, err
    assert {"soup.soup.pt", "soup.calibrated.pt"} <= {p.name for p in out.iterdir()}
    card_data = json.loads((models / "soup.json").read_text())
    assert card_data["spec"]["architecture"] == "tiny_age_net" and card_data["combined"]["kind"] == "soup"
    assert card_data["members"][0]["in_soup"] or card_data["members"][1]["in_soup"]
    assert "validation score" in err and "soup score" in err
    assert dldl.load("soup").predict_files(sorted((tiny_run / "data").glob("*.png"))[:2]).estimate.shape == (2,)


def test_a_given_temperature_reads_no_data(tiny_run, card, models, tmp_path, monkeypatch, capsys):
    gone = tmp_path / "gone"
    ck = _copy(tiny_run / "run" / "best.pt", tmp_path / "elsewhere.pt", root=str(gone / "manifest.csv"), cache_dir=str(gone))
    code, _, err = release_cli(monkeypatch, capsys, ck, "--name", "t1", "--card", card, "--models-dir", models, "--temperature", "1")
    assert code == 0, err
    card_data = json.loads((models / "t1.json").read_text())
    assert card_data["calibration"] == {"temperature": 1.0, "fitted": False, "tta_flip": True} and card_data["spec"]["temperature"] == 1.0
    assert not gone.exists()
    code, _, err = release_cli(monkeypatch, capsys, ck, "--name", "t2", "--card", card, "--models-dir", models)
    assert_one_line_error(code, err, str(gone))  # fitting one would read the run's data
    assert not (models / "t2.json").exists()


@pytest.mark.parametrize("args, fragments", [
    (["{tmp}/no_such_run", "--card", "{card}"], ["{tmp}/no_such_run", "neither a file nor a shipped model"]),
    (["{tmp}/no_such_run/best.pt", "--card", "{card}"], ["{tmp}/no_such_run/best.pt", "model file not found"]),
    (["{run}", "--card", "{card}", "--reference", "imdb:{tmp}:train"], ["--reference imdb:", "unknown dataset 'imdb'"]),
    (["{run}", "--card", "{tmp}/bad.json"], ["--card {tmp}/bad.json", "not valid JSON"]),
    (["{run}", "--card", "{tmp}/list.json"], ["--card {tmp}/list.json", "must be a JSON object"]),
    (["{run}", "--card", "{card}", "--metrics", "{tmp}/list.json"], ["--metrics {tmp}/list.json", "not a table of metrics"]),
    (["{run}", "--card", "{card}", "--temperature", "0"], ["--temperature 0.0", "must be a number > 0"]),
    (["{run}", "--card", "{card}", "--soup"], ["--soup", "at least two RUNs"]),
    (["{run}", "--card", "{card}", "--out-dir", "{card}"], ["--out-dir", "is a file"]),
])
def test_bad_inputs_are_one_line(args, fragments, run, card, models, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.json").write_text("{summary: not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    fill = {"tmp": tmp_path, "card": card, "run": run}
    code, _, err = release_cli(monkeypatch, capsys, *[a.format(**fill) for a in args], "--name", "toy", "--models-dir", models)
    assert_one_line_error(code, err, *[f.format(**fill) for f in fragments])
    assert not models.exists() and sorted(p.name for p in run.iterdir()) == ["best.pt"]  # nothing written


def test_a_shipped_model_needs_an_out_dir(card, tmp_path, monkeypatch, capsys):
    code, _, err = release_cli(monkeypatch, capsys, "mobilenet_v2-age", "--name", "toy", "--card", card, "--temperature", "1",
                               "--models-dir", tmp_path / "models")
    assert_one_line_error(code, err, "--out-dir", "mobilenet_v2-age is a shipped model")
    assert not (tmp_path / "models").exists()


def test_the_command_is_listed_and_needs_a_name_and_a_card(run, monkeypatch, capsys):
    code, out, err = release_cli(monkeypatch, capsys, "--help")
    assert code == 0 and "--soup" in out and "--reference" in out
    code, _, err = release_cli(monkeypatch, capsys, run)
    assert code == 2 and "--name" in err


def test_the_card_keeps_the_users_fields_and_says_what_it_replaced():
    from dldl.release import model_card

    base = {"summary": "s", "temperature": 0.5, "members": [{"command": "dldl train a"}], "metrics": ["kept"]}
    with pytest.warns(UserWarning, match=r"--card: the card's temperature, members replaced by this release's"):
        card = model_card(base, {"temperature": 0.9, "fitted": False}, members=[{"run": "a"}, {"run": "b"}],
                          combined={"kind": "ensemble"}, command="dldl release a b")
    assert card["summary"] == "s" and card["metrics"] == ["kept"]  # no --metrics: the card's own stay
    assert card["members"] == [{"run": "a"}, {"run": "b"}] and card["release_command"] == "dldl release a b"
