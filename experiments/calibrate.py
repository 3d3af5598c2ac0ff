"""Fit a trained model's softmax temperature so that its 90% intervals cover 90% of the held-out
truths, and write a calibrated copy of the checkpoint (the input is never overwritten).

The validation splits are the run's own (``ck["config"]``, every source of a mixed run, pooled);
the rows the temperature is fitted on are :func:`dldl.evaluate.temperature_fit_rows`'s (each image
once, exact labels only when there are any). The coverage of every source is printed before and after.
The temperature goes into the copy's ``ModelSpec`` (``temperature``), so every later use of the
model (``dldl predict``, exports, the server) applies it. ``--one-view`` also sets the spec's
``tta_flip`` to false (the model then runs without the mirror-image average) and fits on that one view.
``--temperature T`` writes the copy with T instead of a fitted one and reads no data (``1``: the network's
own distribution, as a distillation teacher gives it); the model may then be a shipped name.

    python experiments/calibrate.py runs/age_wild/best.pt runs/age_wild/calibrated.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.data.cache import load_cached
from dldl.data.samples import SampleList
from dldl.evaluate import fit_temperature, prediction_report, temperature_fit_rows
from dldl.runtime import Estimator, Prediction
from dldl.hub import resolve
from dldl.training import TrainConfig, load_sources
from dldl.errors import run_script


def rows(pred: Prediction, index: np.ndarray) -> Prediction:
    """The predictions of the faces ``index`` selects (a boolean mask or positions)."""
    return Prediction(pred.estimate[index], None if pred.distribution is None else pred.distribution[index], pred.labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--one-view", action="store_true", help="the copy runs without flip TTA; fit the temperature on that view")
    ap.add_argument("--temperature", type=float, help="set this temperature instead of fitting one; no data is read")
    args = ap.parse_args()
    if args.out.resolve() == args.checkpoint.resolve() or args.out.exists():
        raise SystemExit(f"{args.out}: exists or is the input; give a new file name")
    if args.temperature is not None and not args.temperature > 0:
        raise SystemExit(f"--temperature {args.temperature}: must be a number > 0")
    path = resolve(args.checkpoint).path
    ck = load_checkpoint(path)
    est = Estimator.from_checkpoint(path)
    if args.one_view:
        est = Estimator(est.model, dataclasses.replace(est.spec, tta_flip=False))
    if args.temperature is not None:
        spec = dataclasses.replace(est.spec, temperature=args.temperature)
        save_checkpoint(args.out, {**ck, "spec": spec.to_dict()})
        print(json.dumps({"temperature": spec.temperature, "fitted": False, "tta_flip": spec.tta_flip, "out": str(args.out)}, indent=1))
        return
    cfg = TrainConfig.from_checkpoint(ck)
    per_source = [(src.name, src.val) for src in load_sources(cfg) if not src.taught]
    samples = [s for _, v in per_source for s in v.samples]
    images = np.concatenate([load_cached(v, est.cache_size, cfg.cache_dir, cfg.workers, template=est.template) for _, v in per_source])
    fit = temperature_fit_rows(samples)
    pred = est.predict_arrays(images)
    t, cov = fit_temperature(rows(pred, fit), SampleList("pooled-val", [s for s, f in zip(samples, fit) if f]), args.level)
    spec = dataclasses.replace(est.spec, temperature=t)
    tempered = Estimator(est.model, spec).predict_arrays(images)
    report = {"temperature": t, "tta_flip": spec.tta_flip, "fitted_on": int(fit.sum()), "val_coverage_90": cov, "sources": {}}
    start = 0
    for name, v in per_source:
        part = np.arange(start, start + len(v.samples))
        start += len(v.samples)
        before, after = prediction_report(rows(pred, part), v), prediction_report(rows(tempered, part), v)
        report["sources"][name] = {"count": len(v.samples), **{f"{k}_before": before[k] for k in ("mae", "coverage_90", "width_90")},
                                   **{f"{k}_after": after[k] for k in ("mae", "coverage_90", "width_90")}}
    save_checkpoint(args.out, {**ck, "spec": spec.to_dict()})
    print(json.dumps({**report, "out": str(args.out)}, indent=1))



if __name__ == "__main__":
    run_script(main)
