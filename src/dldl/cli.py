"""The ``dldl`` command: train, eval, predict, export, serve, release, info.

Every error a user can cause (a bad path, an unreadable image, a malformed label file, a label
outside the label set, a damaged checkpoint) is printed as one line naming the file and the
problem, with exit status 2; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dldl.assets import PHOTOS_DIR, SAMPLES_DIR
from dldl.data.datasets import DATASETS
from dldl.errors import DldlError, first_line, printable
from dldl.files import write_atomic
from dldl.losses import OBJECTIVES
from dldl.predictor import TASKS

DEFAULT_MODEL = TASKS["age"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Facial age and attractiveness estimation by deep label-distribution learning (DLDL-v2).")
err = Console(stderr=True, emoji=False, highlight=False)
stdout = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 200)  # piped: tables not cut at 80
state = {"debug": False}
EXIT_OK, EXIT_INPUTS, EXIT_USAGE, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
OPTIONAL_PACKAGES = {"torch": "train", "matplotlib": "train", "scipy": "train", "openpyxl": "train", "pyarrow": "parquet",
                     "ray": "ray", "yuface": "yuface"}
"""Packages of dldl's extras (``pip install 'dldl[EXTRA]'``), and the extra that brings each."""
"""Exit codes: success; some inputs could not be read (``predict --strict``, or none could);
bad usage or bad input (one ``error:`` line); a crash, a bug in dldl (one line asking for ``--debug``);
interrupted (Ctrl-C: ``dldl predict`` still writes what it finished)."""


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    state["debug"] = debug


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def run() -> None:
    """Console entry point: run the app, turning user errors into one clear line."""
    warnings.formatwarning = _format_warning  # data warnings (skipped rows...) as one line each
    for stream in (sys.stdout, sys.stderr):  # a console that cannot show a character gets a "?" or "\\xNN", not a crash
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(errors="backslashreplace")
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) inside a command comes back as the return value
        if isinstance(code, int) and code:
            sys.exit(code)
    except DldlError as e:
        _fail(str(e))
    except OSError as e:  # a missing or unwritable path, a full disk: the file and the problem
        if e.filename is None:
            _fail(e.strerror or first_line(e))
        _fail(f"{printable(str(e.filename))}: {e.strerror or first_line(e)}")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted")
    except KeyboardInterrupt:
        _fail("interrupted")
    except ModuleNotFoundError as e:  # an optional package this command needs (the base install predicts without them)
        package = (e.name or "").split(".")[0]
        if package not in OPTIONAL_PACKAGES:
            raise
        _fail(f"this command needs {package}, which is not installed: pip install 'dldl[{OPTIONAL_PACKAGES[package]}]'")
    except Exception as e:  # click usage errors
        from typer.exceptions import TyperException  # typer's own click: usage errors, bad option values

        if isinstance(e, TyperException) and hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if state["debug"]:
            raise
        # not an error a user can cause: a bug, shown as one line with a way to see more
        err.print(f"[bold red]internal error[/] (a bug in dldl, please report it): {type(e).__name__}: "
                  f"{escape(printable(first_line(e)))}; run again with 'dldl --debug ...' for the traceback", soft_wrap=True)
        sys.exit(EXIT_CRASH)


def _fail(message: str) -> None:
    if state["debug"]:
        raise
    err.print(f"[bold red]error:[/] {escape(printable(message))}", soft_wrap=True)
    sys.exit(EXIT_USAGE)


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of TrainConfig fields.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Preset: 'cpu' (64 px TinyAgeNet) or 'paper' (224 px, 60 epochs).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help=f"One of: {', '.join(DATASETS)}.")] = None,
    root: Annotated[Optional[str], typer.Option(help="Dataset folder, or for --dataset csv your CSV: a header "
                                                     "line, then one row per image, columns path,label[,sigma] "
                                                     "(paths relative to the CSV; a validation share is held out).")] = None,
    model: Annotated[Optional[str], typer.Option(help="An architecture: `dldl info` lists them (tiny_age_net, thin_age_net, mobilenet_v2, ...).")] = None,
    loss: Annotated[Optional[str], typer.Option(help=f"One of: {', '.join(OBJECTIVES)}.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Network input side, a multiple of 32.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run folder (checkpoints, log.jsonl, report.json).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start again in an OUT that holds a run (removes its checkpoints and log).")] = False,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any TrainConfig field: --set lam=0.1 --set labels=1:10:0.1 "
                                                                   "--set init_from=mobilenet_v2-age (a shipped model or a checkpoint)")] = None,
) -> None:
    """Train a model.

    \b
    Examples (CPU):
      dldl train --profile cpu --root ../shared/data/utkface --out runs/tiny64
      dldl train --dataset csv --root my_faces.csv --out runs/mine --set init_from=mobilenet_v2-age --set freeze=[features] --set lr=3e-4 --batch-size 16 --epochs 10 --set val_fraction=0.25
    (fine-tuning: the model's network, labels and template are taken where unset; README "Training on your own data")
    """
    from dldl.training import TrainConfig
    from dldl.training import train as run_training

    options = dict(dataset=dataset, root=root, model=model, loss=loss, epochs=epochs, batch_size=batch_size,
                   input_size=input_size, out_dir=out, device=device, seed=seed, resume=resume or None,
                   overwrite=overwrite or None)
    overrides: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    for item in set_ or []:  # --set wins over the options above
        key, sep, value = item.partition("=")
        if not sep:
            raise DldlError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    cfg = TrainConfig.from_sources(profile, config, overrides)
    if cfg.root is None and cfg.dataset != "csv" and not cfg.sources:
        raise DldlError("no dataset folder: give --root DIR (e.g. --root ../shared/data/utkface)")
    try:
        report = run_training(cfg)
    except KeyboardInterrupt:
        err.print(f"interrupted: the run in {escape(printable(str(cfg.out_dir)))} keeps its last checkpoint; continue it with "
                  "the same command and --resume", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if "test" in report:
        typer.echo(json.dumps({"test_mae": report["test"]["mae"], "best_val_mae": report["best_val_mae"],
                               "out": cfg.out_dir}))


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option(help="A shipped model name (dldl info) or a checkpoint path.")] = DEFAULT_MODEL,
    dataset: Annotated[str, typer.Option(help="Dataset kind (see dldl train --help).")] = "utkface",
    root: Annotated[Optional[str], typer.Option(help="Dataset folder (or CSV manifest).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split name or split file (default: the dataset's test split, "
                                                     "e.g. coral_test for UTKFace; none for a CSV).")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Write PNG plots into this folder.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the JSON report to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report as the last stdout line.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (a GPU runs the network in torch).")] = "cpu",
    cache_dir: Annotated[Optional[str], typer.Option(help="Decoded-image cache folder (default ~/.cache/dldl).")] = None,
) -> None:
    """Evaluate a model on a dataset split: MAE, CS, epsilon-error, RMSE, Pearson, MAE by group."""
    from dldl.data.datasets import get_dataset, load_dataset
    from dldl.data.sources import check_labels_in
    from dldl.evaluate import evaluate
    from dldl.hub import load
    from dldl.outputs import check_output_dir, check_output_file

    if root is None:
        raise DldlError("no dataset: give --root DIR (or --root FILE.csv with --dataset csv)")
    if split is None:
        split = get_dataset(dataset).test_split
    if out is not None:
        check_output_file(out, "--out", [root])
    if plots is not None:
        check_output_dir(plots, "--plots")
    estimator = load(model, device)
    samples = load_dataset(dataset, root, split)
    check_labels_in(samples, estimator.labels)
    report = {"model": str(model), "dataset": dataset, "split": split or "",
              **evaluate(estimator, samples, cache_dir, plots, progress=not as_json)}
    if out:
        write_atomic(out, Path.write_text, json.dumps(report, indent=1))
        _report_written(out)
    if as_json:
        typer.echo(json.dumps(report))
        return
    from rich.text import Text

    table = Table(title=Text(f"{printable(str(model))} on {dataset}/{printable(split or Path(root).name)} ({report['count']} images)"))
    table.add_column("metric")
    table.add_column("flip TTA", justify="right")
    table.add_column("no TTA", justify="right")
    for key in ("mae", "rmse", "pearson", "epsilon_error") if estimator.task == "beauty" else ("mae", "rmse", "pearson", "cs5", "epsilon_error"):  # CS(5): within 5 years
        if key in report:
            table.add_row(key, f"{report[key]:.4f}", f"{report['no_flip'][key]:.4f}")
    stdout.print(table)


@app.command()
def predict(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Photos, folders (recursive) or globs (default: the bundled photos).")] = None,
    model: Annotated[Optional[str], typer.Option(help="A shipped model name or a model file (default: the shipped model for --task).")] = None,
    task: Annotated[str, typer.Option(help="age or beauty: picks the default model.")] = "age",
    crops: Annotated[bool, typer.Option("--crops", help="Inputs are aligned face crops: skip detection.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array (an object per image).")] = False,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Also write one CSV row per face to this file.")] = None,
    parquet_path: Annotated[Optional[Path], typer.Option("--parquet", help="Also write one Parquet row per face to this file "
                                                         "(needs pyarrow: pip install 'dldl[parquet]').")] = None,
    save_dir: Annotated[Optional[Path], typer.Option(help="Write each photo with boxes and estimates drawn into this folder.")] = None,
    plot_distributions: Annotated[bool, typer.Option("--plot-distributions", help="With --save-dir, also plot each face's predicted distribution.")] = False,
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="Average each face with its mirror image (default: the model's own setting, on for most).")] = None,
    min_score: Annotated[float, typer.Option(help="Keep faces the detector scores at least this (0-1).")] = 0.7,
    min_face_size: Annotated[float, typer.Option(help="Keep faces at least this many pixels wide.")] = 20.0,
    distribution: Annotated[bool, typer.Option("--distribution", help="With --json, add each face's distribution.")] = False,
    full_table: Annotated[bool, typer.Option("--table", help="Print every face even for many photos (default: a summary over 20 photos).")] = False,
    runtime: Annotated[str, typer.Option(help="auto (ONNX Runtime on the CPU, else torch), onnx (the model is exported once and cached) or torch.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (a GPU runs the network in torch).")] = "cpu",
    strict: Annotated[bool, typer.Option("--strict", help="Exit with status 1 if any input could not be read.")] = False,
    every: Annotated[Optional[int], typer.Option(help="Videos: use every N-th frame.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Videos: sample this many frames a second (default 2).")] = None,
    frames: Annotated[bool, typer.Option("--frames", help="Each folder given is the frames of one video (sorted by name).")] = False,
) -> None:
    """Estimate the age (or beauty) of every face in photos or videos, offline.

    Faces are detected, aligned to the model's training crops and estimated; unreadable files are
    reported and skipped, the others continue. Videos (.mp4, .mov, .avi, .mkv, .webm) and folders
    of frames (--frames) are sampled, faces are tracked across frames, and each track gets one
    estimate (one JSON line per track with --json; an annotated .mp4 with --save-dir).
    """
    from dldl import parquet
    from dldl import predictor as photo_pipeline
    from dldl.outputs import check_output_dir, check_output_file, output_names
    from dldl.progress import track
    from dldl.results import summarize
    from dldl.video import VIDEO_SUFFIXES

    default_dir = SAMPLES_DIR if crops else PHOTOS_DIR
    videos = frames or any(Path(p).suffix.lower() in VIDEO_SUFFIXES for p in paths or [])
    if videos:
        files = [Path(p) for p in paths or []]
        kind = "folders of frames" if frames else "videos"
        if frames and not all(f.is_dir() for f in files):
            raise DldlError("--frames: give folders of frames (photos and videos go in runs of their own)")
        if not frames and not all(f.suffix.lower() in VIDEO_SUFFIXES for f in files):
            raise DldlError(f"give photos and {kind} in separate runs (the outputs differ: a face per photo, a track per video)")
        if crops or csv_path is not None or parquet_path is not None or plot_distributions:
            raise DldlError(f"--crops, --csv, --parquet and --plot-distributions are for photos, not {kind}")
    elif every is not None or fps is not None:
        raise DldlError("--every and --fps are for videos (.mp4, .mov, ...) or --frames folders")
    files = files if videos else photo_pipeline.expand_paths(paths or [str(default_dir)])
    if not files:
        raise DldlError(f"no image files found in {', '.join(paths or [str(default_dir)])}")
    model = model or photo_pipeline.default_model(task)
    if plot_distributions and save_dir is None:
        raise DldlError("--plot-distributions writes one plot per photo into --save-dir: give --save-dir DIR")
    # every output path is checked before any inference, so a bad one costs nothing
    if csv_path is not None:
        check_output_file(csv_path, "--csv", files)
    if parquet_path is not None:
        parquet.require_pyarrow("--parquet")
        check_output_file(parquet_path, "--parquet", files)
    if save_dir is not None:
        check_output_dir(save_dir, "--save-dir")
    if not 0 <= min_score <= 1:
        raise DldlError(f"--min-score {min_score}: must be in [0, 1]")
    if not 0 <= min_face_size < 100_000:
        raise DldlError(f"--min-face-size {min_face_size}: must be >= 0 (pixels)")
    predictor = photo_pipeline.pipeline(task, model, device, runtime, crops, min_score, min_face_size, tta, cache=False)
    if videos:
        code = _predict_videos(files, predictor, as_json, save_dir, every, fps, frames, strict)
        if code:
            raise typer.Exit(code)
        return
    name = predictor.estimator.task
    pictures = output_names(files, save_dir, name) if save_dir is not None else []
    plots = output_names(files, save_dir, f"{name}_distributions", ".png") if plot_distributions and save_dir else []
    results = []
    written: list[Path] = []
    failed: list[str] = []
    stream = predictor.stream(files)
    interrupted = False
    try:
        for i, result in enumerate(track(stream, len(files), "predicting", enabled=len(files) > 3)):  # stderr, terminals only
            results.append(result)
            if save_dir is not None and not failed and result.error is None:
                try:
                    written.append(result.save(pictures[i]))
                    if plots and result.faces and result.faces[0].distribution is not None:
                        _plot_distributions(result, plots[i])
                        written.append(plots[i])
                except OSError as e:  # e.g. the disk filled: no more pictures, the estimates go on
                    failed.append(f"{printable(str(pictures[i].parent))}: {e.strerror or first_line(e)}")
            result.image = None  # the pixels are not kept past their picture
    except KeyboardInterrupt:  # Ctrl-C: what is done is still printed and written, then exit 130
        interrupted = True
    tables = ((csv_path, lambda path: write_atomic(path, _write_csv, results, distribution)),
              (parquet_path, lambda path: parquet.write(path, results, name, distribution)))
    for path, write in tables:  # one row a face, each file written atomically
        if path is None:
            continue
        try:
            written.append(write(path))
        except OSError as e:
            failed.append(f"{printable(str(path))}: {e.strerror or first_line(e)}")
    if as_json:
        typer.echo(json.dumps([r.to_dict(distribution) for r in results]))
    elif len(results) == 1 and results[0].error:  # one photo that could not be read: one error line, no table
        err.print(f"[bold red]error:[/] {escape(printable(results[0].error))}", soft_wrap=True)
    elif full_table or len(results) <= SUMMARY_OVER:
        _print_table(results)
    else:
        for line in summarize(results):
            stdout.print(printable(line), markup=False)
    tables_written = [p for p in written if p in (csv_path, parquet_path)]
    pictures_written = [p for p in written if p not in tables_written]
    if len(pictures_written) > WROTE_EACH_UP_TO:  # one line for many pictures, not one a photo
        err.print(f"wrote {len(pictures_written)} files into {escape(printable(str(save_dir)))}", soft_wrap=True)
    for path in written if len(pictures_written) <= WROTE_EACH_UP_TO else tables_written:
        _report_written(path)
    if failed:  # the estimates were printed above; what could not be written is named here
        for line in failed:
            err.print(f"[bold red]error:[/] could not write {escape(line)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    if interrupted:
        err.print(f"interrupted: {len(results)} of {len(files)} photos done; their results are above"
                  + (" and in the files written" if written else ""), soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    unreadable = sum(1 for r in results if r.error)
    if not results or unreadable == len(results) or (strict and unreadable):
        raise typer.Exit(EXIT_INPUTS)


@app.command()
def batch(
    paths: Annotated[list[str], typer.Argument(help="Photos, folders (recursive), globs, or URIs read through pyarrow (s3://bucket/photos/).")],
    out: Annotated[str, typer.Option("--parquet", help="Output folder of Parquet part files, one row a face; photos already in it are skipped.")],
    address: Annotated[Optional[str], typer.Option(help="A running Ray cluster: ray://HEAD:10001 or auto (default: $RAY_ADDRESS, else a local cluster on this machine).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Actors, each holding one model (default: the cluster's CPUs less one; a local cluster: one a core).")] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs of each actor, and its ONNX Runtime threads.")] = 1.0,
    model: Annotated[Optional[str], typer.Option(help="A shipped model name or a model file (default: the shipped model for --task).")] = None,
    task: Annotated[str, typer.Option(help="age or beauty: picks the default model.")] = "age",
    crops: Annotated[bool, typer.Option("--crops", help="Inputs are aligned face crops: skip detection.")] = False,
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="Average each face with its mirror image (default: the model's own setting).")] = None,
    min_score: Annotated[float, typer.Option(help="Keep faces the detector scores at least this (0-1).")] = 0.7,
    min_face_size: Annotated[float, typer.Option(help="Keep faces at least this many pixels wide.")] = 20.0,
    distribution: Annotated[bool, typer.Option("--distribution", help="Add each face's distribution {labels, probs}.")] = False,
    batch_size: Annotated[int, typer.Option(help="Photos sent to an actor at a time.")] = 16,
    rows_per_file: Annotated[int, typer.Option(help="Rows gathered into one part file (the unit a re-run skips).")] = 10_000,
) -> None:
    """Predict many photos on a Ray cluster into a folder of Parquet files (one row a face); resumable.

    Each actor loads the model once; a photo that cannot be read gets an error row; a worker that
    dies is restarted and its batch retried. Run it again into the same folder to do the photos it
    does not hold yet. Needs ray: pip install 'dldl[ray]'. See docs/SCALE.md.

    \b
    Examples:
      dldl batch photos/ --parquet faces/                                # a local cluster, one actor a core
      dldl batch s3://bucket/photos/ --parquet faces/ --address auto     # on a cluster node (ray job submit)
    """
    from dldl import batch as scale
    from dldl.progress import progress_bar

    if "://" in out:
        raise DldlError(f"--parquet {out}: give a local or mounted folder (object storage output: see docs/SCALE.md)")
    if (workers is not None and workers < 1) or not 0 < cpus_per_worker <= 1024 or batch_size < 1 or rows_per_file < 1:
        raise DldlError("--workers, --cpus-per-worker, --batch-size and --rows-per-file must be positive")
    with progress_bar(True, 0, "batch") as bar:
        last = [time.monotonic()]

        def on_block(counts: Any, todo: int, seconds: float) -> None:
            if bar.shown:  # a terminal: the bar
                bar.update(counts.photos, todo, counts.line(seconds=seconds))
            elif time.monotonic() - last[0] >= PROGRESS_EVERY_S:  # a log: one line now and then
                err.print(escape(f"batch: {counts.line(todo, seconds)}"), soft_wrap=True)
                last[0] = time.monotonic()

        summary = scale.run(paths, out, task, model, address, workers, cpus_per_worker, batch_size, rows_per_file, crops,
                            min_score, min_face_size, tta, distribution, on_block)
    for line in summary.lines(out):
        stdout.print(printable(line), markup=False, soft_wrap=True)
    counts = summary.counts
    if counts.photos and counts.errors == counts.photos:
        raise typer.Exit(EXIT_INPUTS)


PROGRESS_EVERY_S = 30.0
"""``dldl batch`` writes a progress line this often when stderr is not a terminal (a log)."""


def _plot_distributions(result: Any, path: Path) -> None:
    """Each face of ``result`` with its predicted distribution, as one PNG."""
    from dldl.plots import plot_face_distributions

    faces = result.faces
    plot_face_distributions(np.stack([face.crop for face in faces]), np.stack([face.distribution for face in faces]),
                            result.labels.values(), path, pred=np.array([face.value for face in faces]), label_name=result.task)


def _predict_videos(sources: list[Path], predictor: Any, as_json: bool, save_dir: Path | None,
                    every: int | None, fps: float | None, frames: bool, strict: bool) -> int:
    """Each video (or folder of frames): sampled, faces tracked, one line per track; the exit code."""
    from rich.text import Text

    from dldl.errors import DataError
    from dldl.outputs import output_names

    name = predictor.estimator.task
    outputs = output_names(sources, save_dir, name, ".mp4") if save_dir is not None else []
    rows: list[dict[str, Any]] = []
    table_rows: list[tuple[str, ...]] = []
    failed = 0
    for i, src in enumerate(sources):
        try:
            video = predictor.video(src, every, fps, frames, save=outputs[i] if outputs else None)
        except DataError as e:
            failed += 1
            rows.append({"video": str(src), "track": None, "error": str(e)})
            table_rows.append((Path(src).name, "", "", "", "", "", str(e)))
            continue
        rows += video.to_dicts()
        table_rows += video.table_rows()
        if outputs:
            _report_written(outputs[i])
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
    else:
        table = Table(title=Text(f"{name} by face track ({printable(predictor.model)})"))
        for col in ("video", "track", "frames", "seconds", name, "5-95% interval", "note"):
            table.add_column(col)
        for row in table_rows:
            table.add_row(*(Text(printable(cell)) for cell in row))
        stdout.print(table)
    return EXIT_INPUTS if failed and (strict or failed == len(sources)) else EXIT_OK


def _report_written(path: Path) -> None:
    """One ``wrote PATH`` line on stderr per file written for the user."""
    err.print(f"wrote {escape(printable(str(path)))}", soft_wrap=True)


def _write_csv(path: Path, results: list[Any], distribution: bool = False) -> None:
    """One row per face (:meth:`dldl.results.PhotoResult.csv_rows`), in the columns of
    :func:`dldl.results.csv_header`; a photo without faces gets one row saying why."""
    import csv

    from dldl.results import csv_header

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(csv_header(results[0].task) if results else [])
        for r in results:
            w.writerows([[printable(c) if isinstance(c, str) else c for c in row] for row in r.csv_rows(distribution)])


SUMMARY_OVER = 20
WROTE_EACH_UP_TO = 5
"""Up to this many annotated pictures get a ``wrote PATH`` line each; more get one line for the folder."""
"""``dldl predict`` prints a summary instead of the full table for more photos than this (``--table``: always the table)."""


def _print_table(results: list[Any]) -> None:
    from rich.text import Text

    first = results[0]
    scale = next((r.labels for r in results if r.labels is not None), None)
    span = f", scale {scale.start:g}-{scale.stop:g}" if scale is not None else ""
    table = Table(title=Text(f"{first.task} estimates ({printable(first.model)}{span})"))
    for col in ("file", "face", "box", first.task, "5-95% interval", "note"):
        table.add_column(col)
    for r in results:  # cells as Text: file names are shown as they are, never read as markup
        for row in r.table_rows():
            table.add_row(*(Text(printable(cell)) for cell in row))
    stdout.print(table)


@app.command()
def export(
    model: Annotated[str, typer.Option(help="A shipped model name or a checkpoint path.")] = DEFAULT_MODEL,
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (default: MODEL.onnx / MODEL.torchscript, a run's named after its folder).")] = None,
) -> None:
    """Export a model for deployment; the file carries its label set and input geometry.

    dldl predict --model FILE.onnx and dldl.load("FILE.onnx") use it directly.
    """
    from dldl.export import FORMATS
    from dldl.export import export as run_export
    from dldl.hub import RUN_CHECKPOINT, load, resolve
    from dldl.outputs import check_output_file

    if fmt not in FORMATS:
        raise DldlError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    weights = resolve(model)
    stem = weights.path.parent.name if weights.path.name in (RUN_CHECKPOINT, "last.pt") else weights.path.stem  # a run: its folder's name
    target = check_output_file(output or Path(f"{stem}.{fmt}"), "--output", [weights.path])
    path = run_export(load(model), target, fmt)
    typer.echo(f"wrote {printable(str(path))} ({path.stat().st_size / 1e6:.2f} MB)")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    task: Annotated[str, typer.Option(help="age, beauty or both: the models served (the first is the default).")] = "age",
    model: Annotated[Optional[str], typer.Option(help="A shipped model name or a model file for --task (default: the shipped one).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload (request body), in MB.")] = 10.0,
) -> None:
    """Web demo at http://HOST:PORT/ and a JSON API: POST /v1/predict (a photo upload), docs at /docs."""
    if task not in (*TASKS, "both"):
        raise DldlError(f"unknown task {task!r}; use one of {', '.join(TASKS)} or both")
    if model is not None and task == "both":
        raise DldlError("--model serves one task: give --task age or --task beauty with it")
    if not 0 <= port <= 65535:
        raise DldlError(f"--port {port}: must be in 0-65535 (0: any free port)")
    if not 0 < max_upload_mb <= 1000:  # also refuses inf and nan
        raise DldlError(f"--max-upload-mb {max_upload_mb}: must be > 0 and at most 1000")
    from dldl.serve import ServerLimits, create_app
    from dldl.serve import run as run_server

    models = dict(TASKS) if task == "both" else {task: model or TASKS[task]}
    web = create_app(models, max_upload_bytes=int(max_upload_mb * 1e6))
    run_server(web, host, port, ServerLimits())


@app.command()
def release(
    runs: Annotated[list[str], typer.Argument(metavar="RUN", help="Run folders (their best.pt), checkpoints or shipped names; several make one "
                                                   "ensemble of calibrated members (or with --soup a weight soup).", show_default=False)],
    name: Annotated[str, typer.Option(help="The model's name: NAME.pt and NAME.json in the models folder.", show_default=False)],
    card: Annotated[Path, typer.Option(help="JSON object of the card's own fields (summary, data, licence, ...).", show_default=False)],
    one_view: Annotated[bool, typer.Option("--one-view", help="The model runs without flip TTA; calibrate on that one view.")] = False,
    temperature: Annotated[Optional[float], typer.Option(help="Set this temperature instead of fitting one; reads no data.")] = None,
    level: Annotated[float, typer.Option(help="The interval coverage the temperature is fitted to.")] = 0.9,
    soup: Annotated[bool, typer.Option("--soup", help="Several RUNs: a greedy weight soup instead of an ensemble.")] = False,
    reference: Annotated[Optional[str], typer.Option(help="DATASET:ROOT[:SPLIT]: percentiles among the model's estimates on "
                                                          "these faces (beauty models; default split: the training split).")] = None,
    metrics: Annotated[Optional[list[Path]], typer.Option(help="JSON of dldl eval --json/--out or benchmarks/generalization.py "
                                                               "--json: its rows go into the card's metrics (repeatable).")] = None,
    models_dir: Annotated[Optional[Path], typer.Option(help="Install here instead of the package's models folder.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Keep the intermediate checkpoints here (default: the first RUN's folder).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an installed model of the same name.")] = False,
) -> None:
    """Release trained runs as one shipped model: combine, calibrate, reference quantiles, card, install.

    \b
    Examples:
      dldl release runs/age_teens --name mobilenet_v2-age --card card.json --replace
      dldl release runs/a runs/b --name my-beauty --card card.json --one-view --reference mebeauty:../shared/data/mebeauty:train
    """
    import shlex

    from dldl.release import release as run_release

    command = "dldl " + shlex.join(sys.argv[1:])
    done = run_release(runs, name, card, one_view=one_view, temperature=temperature, level=level, soup=soup, reference=reference,
                       metrics=metrics or [], models_dir=models_dir, out_dir=out_dir, replace=replace, command=command,
                       log=lambda line: err.print(escape(printable(line)), soft_wrap=True))
    typer.echo(json.dumps({"model": str(done.model), "card": str(done.card), "temperature": done.card_data["temperature"],
                           "kept": [str(p) for p in done.kept]}))


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Print it all as one JSON object.")] = False) -> None:
    """Versions, device, architectures (with parameter counts) and shipped models."""
    import dldl
    from dldl.hub import list_pretrained, model_card

    try:
        import torch

        from dldl.models import create_model, list_models

        versions = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()}
        architectures = {name: None if name == "ensemble" else sum(p.numel() for p in create_model(name).parameters())
                         for name in list_models()}
    except ModuleNotFoundError:  # the base install: predicting needs no torch, the networks' definitions do
        versions, architectures = {"torch": None, "cuda": False, "threads": None}, {}
    about = {"dldl": dldl.__version__, **versions, "architectures": architectures, "models": []}
    for name in list_pretrained():
        card = model_card(name)
        about["models"].append({"name": name, "task": card.get("task", "age"), "default": name in TASKS.values(),
                                "trained_on": (card.get("spec") or {}).get("label_range"), "summary": card.get("summary", "")})
    if as_json:
        typer.echo(json.dumps(about))
        return
    if about["torch"] is None:
        stdout.print(f"dldl {about['dldl']}, no torch (prediction runs on ONNX Runtime; training: pip install 'dldl[train]')",
                     markup=False)
    else:
        stdout.print(f"dldl {about['dldl']}, torch {about['torch']}, cuda {'available' if about['cuda'] else 'not available'}, "
                     f"{about['threads']} threads")
    if about["architectures"]:
        table = Table(title="architectures (101-way head)")
        table.add_column("name")
        table.add_column("parameters", justify="right")
        for name, count in about["architectures"].items():
            table.add_row(name, "its members'" if count is None else f"{count:,}")
        stdout.print(table)
    models = Table(title="shipped models (dldl predict --model NAME)")
    for col in ("name", "task", "trained on", "summary"):
        models.add_column(col)
    for m in about["models"]:
        span = f"{m['trained_on'][0]:g}-{m['trained_on'][1]:g}" if m["trained_on"] else ""
        models.add_row(m["name"] + (" (default)" if m["default"] else ""), m["task"], span, Text(m["summary"]))
    stdout.print(models if about["models"] else "no shipped models yet")


if __name__ == "__main__":
    run()
