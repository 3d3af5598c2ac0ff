"""Train one leave-one-source-out model: a training config with one of its sources left out.

``python experiments/loso.py CONFIG --without SOURCE`` reads CONFIG (a ``dldl train`` YAML with
``sources``), drops every source whose ``dataset`` is SOURCE (``none`` keeps them all), writes the
config it trains into the run folder as ``loso.yaml`` (with ``extra.sources_seen`` and
``extra.held_out``, which ``benchmarks/generalization.py`` reads to mark in-domain cells), and runs
``dldl train --config`` on it. The run folder is ``runs/loso/<config stem>-without-<SOURCE>``
unless ``--out`` names another. ``--set`` passes overrides through (e.g. ``--set epochs=1``); the run's
``extra.recipe`` is the config with its overrides, so that runs of one recipe are grouped together.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml


def recipe(config: Path, overrides: list[str]) -> str:
    """The recipe a run is grouped under in the leave-one-source-out table: the config and its ``--set`` overrides.

    >>> recipe(Path("experiments/loso/age_consistency.yaml"), ["consistency_on=distribution"])
    'experiments/loso/age_consistency.yaml --set consistency_on=distribution'
    """
    return " ".join([str(config), *(f"--set {kv}" for kv in overrides)])


def left_out(cfg: dict, without: str, out: Path, recipe: str) -> dict:
    """``cfg`` without the sources of dataset ``without`` (``'none'``: all kept), writing to ``out``, with
    ``extra`` naming what it saw, what it left out and its recipe (read by ``benchmarks/generalization.py``).

    >>> c = left_out({"sources": [{"dataset": "aaf"}, {"dataset": "utkface"}, {"dataset": "aaf"}]}, "aaf", Path("r"), "R")
    >>> c["sources"], c["extra"]
    ([{'dataset': 'utkface'}], {'sources_seen': ['utkface'], 'held_out': ['aaf'], 'recipe': 'R'})
    """
    sources = [s for s in cfg["sources"] if s["dataset"] != without]
    extra = {**(cfg.get("extra") or {}), "sources_seen": sorted({s["dataset"] for s in sources}),
             "held_out": [] if without == "none" else [without], "recipe": recipe}
    return {**cfg, "sources": sources, "out_dir": str(out), "extra": extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--without", required=True, help="the dataset name of the source to leave out, or 'none'")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    try:
        cfg = yaml.safe_load(args.config.read_text())
    except (OSError, yaml.YAMLError) as e:
        ap.error(f"{args.config}: cannot read the config ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("sources"), list):
        ap.error(f"{args.config}: not a training config with a list of sources")
    names = [s["dataset"] for s in cfg["sources"]]
    if args.without != "none" and args.without not in names:
        ap.error(f"{args.config}: no source {args.without!r} (its sources: {', '.join(dict.fromkeys(names))})")
    out = args.out or Path("runs/loso") / f"{args.config.stem}-without-{args.without}"
    cfg = left_out(cfg, args.without, out, recipe(args.config, args.set))
    out.mkdir(parents=True, exist_ok=True)
    written = out / "loso.yaml"
    if written.resolve() == args.config.resolve():
        ap.error(f"{args.config}: the config to train from is the file this run would write; give another --out")
    written.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [str(Path(sys.executable).with_name("dldl")), "train", "--config", str(written)]
    for kv in args.set:
        cmd += ["--set", kv]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
