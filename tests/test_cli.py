"""The ``dldl`` command as a user runs it: output formats and one-line errors (exit 2, no traceback)."""

import json
from pathlib import Path

import pytest

from conftest import dldl_cli as dldl


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    text = " ".join(done.stderr.split())
    assert text.startswith("error:"), done.stderr
    for f in fragments:
        assert f in text, (f, done.stderr)


def test_help_lists_commands():
    out = dldl("--help", check=True, fresh_process=True).stdout  # python -m dldl.cli, as a process
    for cmd in ("train", "eval", "predict", "info"):
        assert cmd in out


def test_the_in_process_runner_answers_as_a_process(tiny_run, tmp_path):
    """conftest's dldl_cli runs the command in this process by default; for a result and for an error
    it gives what ``python -m dldl.cli`` gives: the exit status, stdout and stderr."""
    model = tiny_run / "run" / "best.pt"
    for args in (("predict", *_crops(tiny_run), "--crops", "--model", model, "--json"),
                 ("predict", tmp_path / "nope.jpg", "--crops", "--model", model)):
        here, there = dldl(*args), dldl(*args, fresh_process=True)
        assert (here.returncode, here.stdout, here.stderr) == (there.returncode, there.stdout, there.stderr)


def test_info_shows_parameter_counts():
    out = dldl("info", check=True).stdout
    assert "3,708,229" in out and "934,869" in out


def test_predict_json_continues_past_bad_files(tiny_run, tmp_path):
    good = sorted((tiny_run / "data").glob("*.png"))[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    done = dldl("predict", *good, bad, "--crops", "--model", tiny_run / "run" / "best.pt", "--json", check=True)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["error"] is None for r in rows] == [True, True, False]
    assert "broken.jpg" in rows[2]["path"] and rows[2]["faces"] == []
    faces = [r["faces"][0] for r in rows[:2]]
    assert all(isinstance(f["age"], float) and len(f["interval_90"]) == 2 for f in faces)
    strict = dldl("predict", *good, bad, "--crops", "--model", tiny_run / "run" / "best.pt", "--json", "--strict")
    assert strict.returncode == 1 and json.loads(strict.stdout.strip().splitlines()[-1])[0]["error"] is None


def test_eval_json_last_line_has_mae(tiny_run):
    done = dldl("eval", "--model", tiny_run / "run" / "best.pt", "--dataset", "csv", "--root",
                tiny_run / "data" / "manifest.csv", "--split", "", "--json", "--cache-dir", tiny_run / "cache", check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["count"] == 32 and "mae" in report and "no_flip" in report


def test_missing_dataset_root_is_one_line(tmp_path):
    assert_one_line_error(dldl("train", "--root", tmp_path / "nowhere", "--epochs", "1"), "nowhere")


def test_malformed_label_file_is_one_line(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.jpg,forty\n")
    (tmp_path / "a.jpg").write_bytes(b"")
    assert_one_line_error(dldl("train", "--dataset", "csv", "--root", csv, "--set", "train_split=null"), "labels.csv", "forty")


def test_label_outside_label_set_is_one_line(synthetic_manifest):
    done = dldl("train", "--dataset", "csv", "--root", synthetic_manifest, "--set", "train_split=null",
                "--set", "labels=0:30:1", "--set", "test_split=null")
    assert_one_line_error(done, "manifest.csv", "outside")


def test_damaged_model_file_is_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 nope")
    assert_one_line_error(dldl("predict", "--model", bad, fresh_process=True), "model.pt", "corrupted")  # in a process too


def test_unknown_config_field_is_one_line():
    assert_one_line_error(dldl("train", "--root", ".", "--set", "epochz=3"), "epochz")


def test_debug_shows_traceback(tmp_path):
    done = dldl("--debug", "predict", "--model", tmp_path / "none.pt")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_main_job_runs_on_bundled_samples_with_shipped_model():
    from dldl.hub import list_pretrained

    if "tiny_age_net-utkface" not in list_pretrained():
        pytest.skip("no shipped model in this checkout")
    rows = json.loads(dldl("predict", "--json", check=True).stdout.strip().splitlines()[-1])
    assert len(rows) == 3 and all(r["error"] is None and r["faces"] for r in rows)
    for face in (f for r in rows for f in r["faces"]):
        assert 1 < face["age"] < 100 and len(face["box"]) == 4 and len(face["landmarks"]) == 5
    crops = json.loads(dldl("predict", "--crops", "--json", check=True).stdout.strip().splitlines()[-1])
    assert len(crops) == 5 and all(len(r["faces"]) == 1 for r in crops)


def test_set_values_keep_text_fields_as_text():
    from dldl.training import TrainConfig

    cfg = TrainConfig.from_sources(overrides={"labels": "1:10:0.1", "val_split": "null", "lr": "0.5", "resume": "false"})
    assert cfg.labels == "1:10:0.1"  # YAML would read this as a base-60 number
    assert cfg.val_split is None and cfg.lr == 0.5 and cfg.resume is False


def test_save_dir_writes_annotated_photos_and_distribution_plots(tmp_path):
    from dldl.hub import list_pretrained

    if "tiny_age_net-utkface" not in list_pretrained():
        pytest.skip("no shipped model in this checkout")
    from PIL import Image

    from dldl.assets import PHOTOS_DIR

    photo = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    dldl("predict", photo, "--save-dir", tmp_path, "--plot-distributions", check=True)
    annotated = tmp_path / f"{photo.stem}_age.jpg"
    plot = tmp_path / f"{photo.stem}_age_distributions.png"
    assert Image.open(annotated).size == Image.open(photo).size
    assert Image.open(plot).format == "PNG" and Image.open(plot).width > 200


MEBEAUTY_ORIGINALS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mebeauty" / "original_images"


@pytest.mark.skipif(not MEBEAUTY_ORIGINALS.is_dir(), reason="../shared/data/mebeauty/original_images not present on this machine")
@pytest.mark.parametrize("task", ["age", "beauty"])
def test_predict_on_real_in_the_wild_photos(task):
    """dldl predict on MEBeauty's original photos (folder input, recursive): a face in nearly every photo."""
    folder = MEBEAUTY_ORIGINALS / "female" / "caucasian"  # 78 photos of various sizes and sources
    rows = json.loads(dldl("predict", folder, "--task", task, "--json", check=True).stdout.strip().splitlines()[-1])
    assert len(rows) == len(list(folder.glob("*.jpg"))) and all(r["error"] is None for r in rows)
    assert sum(bool(r["faces"]) for r in rows) >= 0.95 * len(rows)
    low, high = (0, 100) if task == "age" else (1, 10)
    assert all(low <= f[task] <= high and low <= f["interval_90"][0] <= f["interval_90"][1] <= high for r in rows for f in r["faces"])


# ----------------------------------------------------------------- outputs: checked first, never lost


def _crops(tiny_run, n=2):
    return sorted((tiny_run / "data").glob("*.png"))[:n]


@pytest.mark.parametrize("where, problem", [
    (lambda d: d, "is a folder; give a file name"),
    (lambda d: Path("/dev/full"), "not a regular file (a device, FIFO or socket)"),
    (lambda d: d / "afile" / "out.csv", "afile is a file, not a folder"),
])
def test_bad_csv_path_is_refused_before_any_inference(tiny_run, tmp_path, where, problem):
    (tmp_path / "afile").write_text("x")
    done = dldl("predict", *_crops(tiny_run), "--crops", "--model", tiny_run / "run" / "best.pt", "--csv", where(tmp_path))
    assert_one_line_error(done, "--csv", problem)
    assert done.stdout == ""  # nothing was estimated


def test_failed_csv_write_keeps_the_estimates_and_the_previous_csv(tiny_run, tmp_path, monkeypatch):
    """A disk that fills while the CSV is written: the JSON still reaches stdout, the failed path is
    named in one line (exit 2), and the CSV of the previous run is intact."""
    import errno

    from typer.testing import CliRunner

    import dldl.cli as cli

    csv_path = tmp_path / "faces.csv"
    csv_path.write_text("the previous run's rows\n")

    def full_disk(path, *a, **k):
        Path(path).write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "_write_csv", full_disk)
    result = CliRunner().invoke(cli.app, ["predict", *map(str, _crops(tiny_run)), "--crops", "--model",
                                          str(tiny_run / "run" / "best.pt"), "--json", "--csv", str(csv_path)])
    assert result.exit_code == 2
    rows = json.loads(result.stdout.strip().splitlines()[0])
    assert len(rows) == 2 and all(r["faces"] for r in rows)
    assert f"error: could not write {csv_path}: No space left on device" in " ".join(result.stderr.split())
    assert csv_path.read_text() == "the previous run's rows\n" and not list(tmp_path.glob(".*.tmp"))


def test_save_dir_never_overwrites_an_input_or_another_output(tiny_run, tmp_path):
    """a/x.png, b/x.png, a/x.jpg and a/x_age.jpg annotated into a/ itself: four distinct files,
    every input untouched, each written file reported."""
    from PIL import Image

    src = _crops(tiny_run, 3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inputs = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "x.jpg", tmp_path / "a" / "x_age.jpg"]
    for path, s in zip(inputs, [src[0], src[1], src[2], src[0]]):
        Image.open(s).convert("RGB").save(path)
    before = {p: p.read_bytes() for p in inputs}
    done = dldl("predict", *inputs, "--crops", "--model", tiny_run / "run" / "best.pt", "--save-dir", tmp_path / "a",
                check=True)
    assert {p: p.read_bytes() for p in inputs} == before
    wrote = [Path(line.removeprefix("wrote ")) for line in done.stderr.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 4 and len(set(wrote)) == 4 and not set(wrote) & set(inputs)
    assert all(Image.open(p).format == "JPEG" for p in wrote)
    again = dldl("predict", *inputs, "--crops", "--model", tiny_run / "run" / "best.pt", "--save-dir", tmp_path / "a",
                 check=True)  # stable: the same inputs give the same names
    assert [line for line in again.stderr.splitlines() if line.startswith("wrote ")] == \
        [line for line in done.stderr.splitlines() if line.startswith("wrote ")]


def test_plot_distributions_without_save_dir_is_an_error(tiny_run):
    done = dldl("predict", *_crops(tiny_run), "--crops", "--model", tiny_run / "run" / "best.pt", "--plot-distributions")
    assert_one_line_error(done, "--plot-distributions writes one plot per photo into --save-dir")


# ----------------------------------------------------------------- messages and exit codes


@pytest.mark.parametrize("args, shown", [
    (["predict", "x[/y].jpg"], "no image files found in x[/y].jpg"),
    (["train", "--set", "[/x]=1"], "[/x]"),
    (["eval", "--model", "m[/b].pt", "--root", "r"], "m[/b].pt"),
])
def test_user_text_is_never_read_as_markup(args, shown):
    done = dldl(*args)
    assert_one_line_error(done, shown)
    assert "MarkupError" not in done.stderr and "internal error" not in done.stderr


def test_emoji_codes_in_user_text_stay_as_typed(tmp_path):
    """``--split`` naming a file of ``root:x:0:0`` lines: the error quotes the line as it is (no ❌)."""
    split = tmp_path / "passwd"
    split.write_text("root:x:0:0:root:/root:/bin/bash\n")
    done = dldl("train", "--dataset", "utkface", "--root", tmp_path, "--set", f"train_split={split}", "--epochs", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "\u274c" not in done.stderr


def test_exit_codes(tiny_run, tmp_path):
    """0: done; 1: inputs could not be read (none at all, or some under --strict); 2: bad usage."""
    model = tiny_run / "run" / "best.pt"
    assert dldl("predict", *_crops(tiny_run), "--crops", "--model", model).returncode == 0
    assert dldl("predict", tmp_path / "nope.jpg", "--crops", "--model", model).returncode == 1
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert dldl("predict", *_crops(tiny_run), bad, "--crops", "--model", model).returncode == 0
    assert dldl("predict", *_crops(tiny_run), bad, "--crops", "--model", model, "--strict").returncode == 1
    assert dldl("predict", "--no-such-option").returncode == 2


@pytest.mark.parametrize("device, problem", [
    ("nope", "device 'nope': must be auto, cpu, cuda or cuda:N"),
    pytest.param("cuda", "device 'cuda': must be cpu or auto: this machine has no usable CUDA device",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_device_is_named_as_such(tiny_run, device, problem):
    done = dldl("predict", *_crops(tiny_run), "--crops", "--model", tiny_run / "run" / "best.pt", "--device", device)
    assert_one_line_error(done, problem)
    assert "best.pt" not in done.stderr  # the model file is not blamed


def test_export_to_a_folder_names_the_folder(tmp_path):
    done = dldl("export", "--model", "tiny_age_net-utkface", "-o", tmp_path)
    assert_one_line_error(done, f"--output {tmp_path}: is a folder")
    assert ".tmp" not in done.stderr


def test_many_photos_give_a_summary_and_table_forces_the_rows(tiny_run, tmp_path):
    model = tiny_run / "run" / "best.pt"
    crops = sorted((tiny_run / "data").glob("*.png"))[:22]
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    done = dldl("predict", *crops, tmp_path / "bad.jpg", "--crops", "--model", model, check=True)
    text = " ".join(done.stdout.split())
    assert "23 photos, 22 faces" in text and "1 could not be read" in text and "bad.jpg: not a readable image" in text
    assert "every face: --table, --json or --csv FILE" in text and "┃ file" not in done.stdout
    table = dldl("predict", *crops, "--crops", "--model", model, "--table", check=True)
    assert table.stdout.count(".png") == 22


def test_json_names_the_model_and_gives_distributions_on_request(tiny_run, tmp_path):
    import csv

    model = tiny_run / "run" / "best.pt"
    out = tmp_path / "faces.csv"
    rows = json.loads(dldl("predict", *_crops(tiny_run), "--crops", "--model", model, "--json", "--distribution",
                           "--csv", out, check=True).stdout.strip().splitlines()[-1])
    assert rows[0]["model"] == str(model) and len(rows[0]["model_version"]) == 12
    face = rows[0]["faces"][0]
    assert len(face["distribution"]["probs"]) == len(face["distribution"]["labels"]) == 101 and "flags" in face
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["face"] for r in table] == ["1", "1"] and "flags" in table[0]  # faces numbered from 1, as in the table
