"""Fit a trained model's softmax temperature so that its 90% intervals cover 90% of the held-out
truths, and write a calibrated copy of the checkpoint (the input is never overwritten).

The validation splits are the run's own (``ck["config"]``, every source of a mixed run, pooled);
the temperature goes into the copy's ``ModelSpec`` (``temperature``), so every later use of the
model (``dldl predict``, exports, the server) applies it.

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
from dldl.evaluate import fit_temperature, prediction_report
from dldl.inference import Estimator
from dldl.train import TrainConfig, load_sources


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--level", type=float, default=0.9)
    args = ap.parse_args()
    if args.out.resolve() == args.checkpoint.resolve() or args.out.exists():
        raise SystemExit(f"{args.out}: exists or is the input; give a new file name")
    ck = load_checkpoint(args.checkpoint)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in ck["config"].items() if k in known})
    est = Estimator.from_checkpoint(args.checkpoint)
    vals = [src.val for src in load_sources(cfg)]
    pooled = SampleList("pooled-val", [s for v in vals for s in v.samples])
    images = np.concatenate([load_cached(v, est.cache_size, cfg.cache_dir, cfg.workers, template=est.template) for v in vals])
    pred = est.predict_arrays(images)
    t, cov = fit_temperature(pred, pooled, args.level)
    spec = dataclasses.replace(est.spec, temperature=t)
    before = prediction_report(pred, pooled)
    after = prediction_report(Estimator(est.model, spec).predict_arrays(images), pooled)
    save_checkpoint(args.out, {**ck, "spec": spec.to_dict()})
    print(json.dumps({"temperature": t, "val_coverage_90": cov, "before": {k: before[k] for k in ("mae", "coverage_90", "width_90")},
                      "after": {k: after[k] for k in ("mae", "coverage_90", "width_90")}, "out": str(args.out)}))



if __name__ == "__main__":
    main()
