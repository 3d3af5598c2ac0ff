"""Many photos on a local Ray cluster (:mod:`dldl.batch`, ``dldl batch``): the rows are those of
``dldl predict --json``, from paths or from bytes; a bad photo is an error row; a worker killed
mid-run costs no row and doubles none; a re-run into the same folder does only the photos it lacks.

One local cluster (3 CPUs: 2 actors and room for the data tasks) serves the whole module."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import json_rows, make_photo_folder
from test_parquet import same_rows
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'dldl[ray]')")
pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'dldl[ray]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'dldl[ray]')")

WORKER = "MapWorker(MapBatches(PhotoRows))"  # the process title Ray gives an actor of dldl.batch.PhotoRows


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def expected(photos) -> dict:
    """``dldl predict --json`` on the same photos (absolute paths: the ids ``dldl batch`` uses), flattened."""
    from dldl.cli import app

    run = CliRunner().invoke(app, ["predict", str(photos.resolve()), "--json"])
    assert run.exit_code == 0, run.output
    return json_rows(json.loads(run.stdout.strip().splitlines()[-1]))


def predicted(ds, **kwargs) -> list[dict]:
    from dldl.batch import predict_dataset

    return predict_dataset(ds, "age", workers=2, **kwargs).take_all()


def test_paths_give_the_rows_of_predict_json(cluster, photos, expected):
    paths = sorted(str(p.resolve()) for p in photos.iterdir())
    rows = predicted(ray.data.from_items([{"path": p} for p in paths]), batch_size=3)
    same_rows(rows, expected)
    assert {r["error"] for r in rows if r["face"] is None} >= {"no face found"}  # blank.jpg
    assert any(r["path"].endswith("corrupt.jpg") and "corrupt.jpg" in r["error"] for r in rows)


def test_bytes_read_by_ray_give_the_same_rows(cluster, photos, expected):
    ds = ray.data.read_binary_files(str(photos.resolve()), include_paths=True)
    same_rows(predicted(ds, batch_size=4), expected)


def worker_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and WORKER in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_worker_killed_mid_run_costs_no_row_and_doubles_none(cluster, photos, expected, tmp_path):
    """SIGKILL one of the two actors when the first rows arrive: Ray restarts it and retries its
    batches; every photo has its rows once, in part files written whole."""
    import pyarrow.parquet as pq

    from dldl.batch import predict_dataset, write_parts

    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        for p in photos.iterdir():
            shutil.copy(p, many / f"{i}-{p.name}")
    ds = ray.data.from_items([{"path": str(p)} for p in sorted(many.iterdir())])
    killed: list[int] = []

    def kill_one(counts):
        if not killed and (pids := worker_pids()):
            killed.append(min(pids))
            os.kill(killed[0], signal.SIGKILL)

    out = tmp_path / "out"
    counts = write_parts(predict_dataset(ds, "age", workers=2, batch_size=2), out, rows_per_file=20, on_block=kill_one)
    assert killed, "no worker process was found to kill"
    assert killed[0] not in worker_pids()
    rows = pq.read_table(out).to_pylist()
    by_copy = {}
    for (path, face), row in expected.items():
        for i in range(6):
            copy = str(many / f"{i}-{Path(path).name}")
            by_copy[(copy, face)] = row | {"path": copy, "error": row["error"] and row["error"].replace(path, copy)}
    same_rows(rows, by_copy)  # every photo's rows, once
    assert counts.photos == 6 * len(list(photos.iterdir())) and len(counts.parts) > 1


def test_batch_writes_parts_and_a_rerun_does_only_the_photos_it_lacks(cluster, photos, expected, tmp_path):
    import pyarrow.parquet as pq

    from dldl.cli import app

    out = tmp_path / "out"
    first = [str(p) for p in sorted(photos.iterdir())[:4]]
    run = CliRunner().invoke(app, ["batch", *first, "--parquet", str(out), "--workers", "2"])
    assert run.exit_code == 0, run.output
    assert run.stdout.startswith("4 photos, ") and "0 skipped" in run.stdout
    (out / ".part-x.parquet.99999999.tmp").write_bytes(b"a part file whose writer was killed")

    run = CliRunner().invoke(app, ["batch", str(photos), "--parquet", str(out), "--workers", "2"])
    assert run.exit_code == 0, run.output
    rest = len(list(photos.iterdir())) - 4
    assert run.stdout.startswith(f"{rest} photos, ") and "4 skipped" in run.stdout, run.stdout
    assert not list(out.glob(".*.tmp"))  # the stale temporary file was removed, never read
    same_rows(pq.read_table(out).to_pylist(), expected)

    run = CliRunner().invoke(app, ["batch", str(photos), "--parquet", str(out)])
    assert run.exit_code == 0 and run.stdout.startswith("0 photos, ") and "wrote 0 part file(s)" in run.stdout


def test_a_bad_model_or_a_folder_of_another_task_is_one_line_before_any_work(cluster, photos, tmp_path):
    from dldl.cli import app

    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["batch", str(photos), "--parquet", str(out), "--model", "nope"]).exit_code != 0
    run = CliRunner().invoke(app, ["batch", str(sorted(photos.iterdir())[0]), "--parquet", str(out)])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(app, ["batch", str(photos), "--parquet", str(out), "--task", "beauty"])
    assert "holds age rows, not beauty rows" in str(run.exception)
