"""One output schema (dldl.results.FIELDS): the JSON keys, the CSV columns and the server's OpenAPI
result fields are the same set; and one resolver: a tampered shipped file is refused everywhere."""

import csv
import json
import shutil

import pytest
from typer.testing import CliRunner

from dldl.assets import PHOTOS_DIR
from dldl.results import FIELDS, csv_header, field_names

PHOTO = sorted(PHOTOS_DIR.glob("*.jpg"))[0]


def _json_keys(d: dict) -> set[str]:
    return (set(d) - {"faces"}) | {k for face in d["faces"] for k in face}


def test_fields_are_named_once_and_the_estimate_after_the_task():
    names = [f.name for f in FIELDS]
    assert len(names) == len(set(names))
    assert "age" in field_names("age") and "beauty" not in field_names("age")
    assert csv_header("beauty") == field_names("beauty") and "faces" not in csv_header("beauty")


def test_json_keys_csv_columns_and_openapi_fields_are_one_set(tmp_path):
    """With a beauty model (it reports percentiles) and distributions asked for, every field is
    present: the JSON keys, the CSV header the CLI writes and the server's schema agree."""
    from dldl.cli import app
    from dldl.serve import create_app

    out = tmp_path / "faces.csv"
    run = CliRunner().invoke(app, ["predict", str(PHOTO), "--task", "beauty", "--json", "--distribution", "--csv", str(out)])
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout.strip().splitlines()[-1])[0]
    assert result["faces"], "the bundled photo has a face"
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    expected = set(field_names("beauty"))
    assert _json_keys(result) == expected
    assert set(header) == expected and header == csv_header("beauty")

    schema = create_app({"beauty": "mobilenet_v2-beauty"}).openapi()["components"]["schemas"]
    api = (set(schema["Result"]["properties"]) - {"faces"}) | set(schema["Face"]["properties"])
    assert api == set(field_names("age")) | set(field_names("beauty"))


def test_an_age_result_has_the_schema_fields_but_the_beauty_only_ones():
    import dldl

    result = dldl.predict(PHOTO)
    assert _json_keys(result) == set(field_names("age")) - {"percentile", "distribution"}


def test_csv_cells_hold_lists_as_json_and_a_photo_without_a_face_says_so():
    from dldl.results import PhotoResult

    empty = PhotoResult("x.jpg", [], "age", "m")
    (row,) = empty.csv_rows()
    assert dict(zip(csv_header("age"), row))["error"] == "no face found"


@pytest.fixture
def tampered(tiny_run, tmp_path, monkeypatch):
    """A shipped model ``toy`` (installed from the tiny run) whose file was changed after its card was written."""
    from dldl.hub import install

    monkeypatch.setattr("dldl.hub.MODELS_DIR", tmp_path)
    path = install(tiny_run / "run" / "best.pt", "toy", {"summary": "test model"}, tmp_path)
    shutil.copy(tiny_run / "run" / "last.pt", path)  # same network, other weights: only the sha256 tells
    return path


def test_a_tampered_shipped_file_is_refused_by_name_and_by_path(tampered):
    from dldl.errors import CheckpointError
    from dldl.hub import load, resolve

    for asked in ("toy", str(tampered)):
        with pytest.raises(CheckpointError, match="sha256 does not match its model card"):
            resolve(asked)
        with pytest.raises(CheckpointError, match="sha256 does not match its model card"):
            load(asked, runtime="onnx")


def test_a_tampered_shipped_file_is_refused_by_predict_and_eval(tampered, tiny_run):
    from dldl.cli import app

    crops = sorted((tiny_run / "data").glob("*.png"))[:2]
    for args in (["predict", *map(str, crops), "--crops", "--model", "toy"],
                 ["eval", "--model", "toy", "--dataset", "csv", "--root", str(tiny_run / "data" / "manifest.csv")]):
        run = CliRunner().invoke(app, args)
        assert run.exit_code != 0
        assert "sha256 does not match its model card" in str(run.exception) + run.output


def test_a_tampered_shipped_file_is_refused_by_init_from_and_as_a_teacher(tampered, tiny_run, tmp_path):
    from dldl.errors import CheckpointError
    from dldl.training import TrainConfig, train

    manifest = tiny_run / "data" / "manifest.csv"
    common = dict(dataset="csv", root=str(manifest), train_split=None, test_split=None, val_fraction=0.25, input_size=32,
                  epochs=1, batch_size=8, cache_dir=str(tiny_run / "cache"), progress=False, workers=1)
    with pytest.raises(CheckpointError, match="sha256 does not match its model card"):
        train(TrainConfig(**common, init_from="toy", out_dir=str(tmp_path / "init")))
    with pytest.raises(CheckpointError, match="sha256 does not match its model card"):
        train(TrainConfig(**common, teachers=["toy"], distill=0.5, out_dir=str(tmp_path / "taught")))
