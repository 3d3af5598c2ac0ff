"""Parquet output (``dldl predict --parquet``, :mod:`dldl.parquet`): the rows of ``--json``, one a
face, in an Arrow schema derived from dldl.results.FIELDS; and the one-line answers when the
optional extras (pyarrow, ray) are missing."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import json_rows, make_photo_folder
from typer.testing import CliRunner

from dldl.results import field_names


def same_rows(parquet_rows: list[dict], expected: dict) -> None:
    """Each Parquet row is the JSON row of its photo and face (columns absent from the JSON are
    null), and every JSON row is there once."""
    keys = [(r["path"], r["face"]) for r in parquet_rows]
    assert len(keys) == len(set(keys)), "a photo's face came twice"
    assert set(keys) == set(expected)
    for row in parquet_rows:
        want = expected[(row["path"], row["face"])]
        assert {k: v for k, v in row.items() if k in want} == want
        assert all(row[k] is None for k in set(row) - set(want)), row


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"))


def test_predict_parquet_holds_the_json_rows_in_the_fields_schema(photos, tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'dldl[parquet]')")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dldl.cli import app

    out = tmp_path / "faces.parquet"
    run = CliRunner().invoke(app, ["predict", str(photos), "--json", "--parquet", str(out)])
    assert run.exit_code == 0, run.output
    results = json.loads(run.stdout.strip().splitlines()[-1])
    table = pq.read_table(out)
    assert table.schema.names == field_names("age")
    assert pa.types.is_list(table.schema.field("landmarks").type) and pa.types.is_list(table.schema.field("flags").type)
    assert pa.types.is_floating(table.schema.field("age").type) and pa.types.is_integer(table.schema.field("face").type)
    rows = table.to_pylist()
    same_rows(rows, json_rows(results))
    errors = {r["path"].rsplit("/", 1)[-1]: r["error"] for r in rows if r["face"] is None}
    assert errors["blank.jpg"] == "no face found" and "corrupt.jpg" in errors["corrupt.jpg"]
    assert all(r["model_sha256"].startswith(r["model_version"]) and len(r["model_sha256"]) == 64 for r in rows)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_json_gains_model_sha256_last_and_keeps_its_other_keys_in_place():
    import dldl
    from dldl.assets import PHOTOS_DIR

    result = dldl.predict(sorted(PHOTOS_DIR.glob("*.jpg"))[0])
    assert list(result) == ["path", "task", "model", "model_version", "scale", "faces", "error", "model_sha256"]
    assert result["model_sha256"][:12] == result["model_version"]


def test_the_schema_of_each_task_names_the_estimate_after_it():
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'dldl[parquet]')")
    from dldl.parquet import schema

    beauty = schema("beauty")
    assert beauty.names == field_names("beauty") and "age" not in beauty.names
    assert str(beauty.field("distribution").type) == "struct<labels: list<item: double>, probs: list<item: double>>"


def test_a_folder_of_parts_gives_its_photos_and_refuses_another_model(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'dldl[parquet]')")
    import pyarrow as pa

    from dldl.errors import DldlError
    from dldl.parquet import done_paths, schema, write_part
    from dldl.results import PhotoResult

    rows = [PhotoResult(f"/p/{i}.jpg", [], "age", "m", error="x", model_sha256="a" * 64).records()[0] for i in range(3)]
    write_part(tmp_path, "part-1", pa.Table.from_pylist(rows, schema=schema("age")))
    (tmp_path / ".part-2.parquet.99999999.tmp").write_bytes(b"half a file")  # a write a kill cut short
    assert done_paths(tmp_path, "age", "a" * 64) == {"/p/0.jpg", "/p/1.jpg", "/p/2.jpg"}
    with pytest.raises(DldlError, match="holds rows of another model"):
        done_paths(tmp_path, "age", "b" * 64)
    with pytest.raises(DldlError, match="holds age rows, not beauty rows"):
        done_paths(tmp_path, "beauty", "a" * 64)
    (tmp_path / "notes.parquet").write_text("not parquet")
    with pytest.raises(DldlError, match="notes.parquet: not a readable Parquet file"):
        done_paths(tmp_path, "age", "a" * 64)


def test_without_pyarrow_parquet_is_one_line_with_the_install_command(photos, tmp_path, monkeypatch):
    from dldl.cli import app

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    run = CliRunner().invoke(app, ["predict", str(photos), "--parquet", str(tmp_path / "x.parquet")])
    assert run.exit_code != 0 and run.stdout == ""  # refused before any photo
    assert str(run.exception) == "--parquet needs pyarrow, which is not installed: pip install 'dldl[parquet]'"


def test_without_ray_batch_is_one_line_with_the_install_command(photos, tmp_path, monkeypatch):
    from dldl.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    run = CliRunner().invoke(app, ["batch", str(photos), "--parquet", str(tmp_path / "out")])
    assert run.exit_code != 0 and run.stdout == ""
    assert str(run.exception) == "dldl batch needs ray, which is not installed: pip install 'dldl[ray]'"
    assert not (tmp_path / "out").exists()
