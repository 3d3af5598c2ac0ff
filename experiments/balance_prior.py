"""Balance a trained age model's read-out against its training label prior, chosen on the
training sources' validation splits, and write the balanced copy (the input is never overwritten).

A model trained on a mix whose ages pile up at 20-40 pulls every face it is unsure of towards
that pile: on FG-NET (never trained on) the shipped ``mobilenet_v2-age`` over-estimates ages
14-18 by +9 years. The balanced read-out divides the predicted distribution by the training
prior to a power ``alpha`` (label-shift correction towards a flat prior, as in "Balanced MSE",
Ren et al., CVPR 2022):

    p'(l | x)  ~  p(l | x)^(T0 / T) / prior(l)^alpha

``prior`` is the mean training target of the run's sources under their sampling weights (the
labels only, no images); ``alpha`` is chosen on the pooled validation splits by the MAE averaged
over the 10-year age groups with at least ``MIN_GROUP`` faces (every age counts alike, as on photos
of an unknown age mix), and for each
``alpha`` the temperature ``T`` is refitted so that the 90% intervals cover 90%. Both go into
the weights and the spec: the head's bias gets ``- T * alpha * log(prior)``, the spec
``temperature = T``, so every later use (``dldl predict``, exports, the server) applies it.

    python experiments/balance_prior.py mobilenet_v2-age experiments/age_wild.yaml runs/balanced.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

import dldl
from dldl.checkpoint import load_checkpoint, model_weights, save_checkpoint
from dldl.data.cache import load_cached
from dldl.data.samples import SampleList
from dldl.evaluate import prediction_report, temper
from dldl.runtime import Prediction
from dldl.hub import list_pretrained
from dldl.training import TrainConfig, build_targets, load_sources
from dldl.errors import run_script

ALPHAS = np.round(np.arange(0.0, 1.01, 0.1), 2)


def training_prior(cfg: TrainConfig, sources: list, labels: dldl.LabelSet) -> np.ndarray:
    """``(K,)`` mean training target over the sources, each weighted by its sampling weight."""
    total = sum(s.weight for s in sources)
    prior = np.zeros(labels.num_labels)
    for s in sources:
        _, targets = build_targets(s.train, s.target, cfg.sigma if s.sigma is None else s.sigma, labels)
        prior += s.weight / total * targets.double().mean(0).numpy()
    return prior


def balanced(distribution: np.ndarray, prior: np.ndarray, sharpness: float, alpha: float) -> np.ndarray:
    """``p^sharpness / prior^alpha``, renormalised, for ``(N, K)`` distributions."""
    return temper(temper(distribution, 1.0 / sharpness) / np.clip(prior, 1e-12, None) ** alpha, 1.0)


def fit(dist: np.ndarray, prior: np.ndarray, alpha: float, pooled: SampleList, labels: dldl.LabelSet,
        level: float = 0.9) -> tuple[float, dict]:
    """The largest sharpness (on a grid) whose intervals cover ``level`` of ``pooled``, and its report."""
    best = None
    for sharpness in np.round(np.arange(3.0, 0.19, -0.02), 2):
        p = balanced(dist, prior, float(sharpness), alpha)
        rep = prediction_report(Prediction(p @ labels.values(), p, labels), pooled)
        best = (float(sharpness), rep)
        if rep["coverage_90"] >= level:
            break
    return best


MIN_GROUP = 50  # groups with fewer validation faces are left out of the choice (a handful of centenarians would decide it)


def group_mae(report: dict, min_count: int = MIN_GROUP) -> float:
    """MAE averaged over the 10-year age groups with at least ``min_count`` faces."""
    return float(np.mean([g["mae"] for g in report["mae_by_group"].values() if g["count"] >= min_count]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a shipped model name or a checkpoint")
    ap.add_argument("config", type=Path, help="the run's training config (its sources and sigma)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--json", type=Path, help="write the grid of alphas to this file")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; give a new file name")
    weights = Path(args.model) if args.model not in list_pretrained() else \
        Path(dldl.__file__).parent / "assets" / "models" / f"{args.model}.pt"
    cfg = TrainConfig.from_sources(yaml_file=args.config)
    est = dldl.load(args.model, runtime="torch")
    labels, t0 = est.labels, est.spec.temperature
    sources = load_sources(cfg)
    prior = training_prior(cfg, sources, labels)
    vals = [s.val for s in sources]
    pooled = SampleList("pooled-val", [x for v in vals for x in v.samples])
    images = np.concatenate([load_cached(v, est.cache_size, cfg.cache_dir, cfg.workers, template=est.template) for v in vals])
    dist = est.predict_arrays(images).distribution  # at the model's own temperature t0
    grid = []
    for alpha in ALPHAS:
        sharpness, rep = fit(dist, prior, float(alpha), pooled, labels)
        grid.append({"alpha": float(alpha), "temperature": round(t0 / sharpness, 4), "group_mae": round(group_mae(rep), 4),
                     "mae": round(rep["mae"], 4), "coverage_90": round(rep["coverage_90"], 4), "width_90": rep["width_90"],
                     "mae_by_group": {k: [round(v["mae"], 3), v["count"]] for k, v in rep["mae_by_group"].items()}})
        print(json.dumps({k: v for k, v in grid[-1].items() if k != "mae_by_group"}), flush=True)
    pick = min(grid, key=lambda g: g["group_mae"])
    ck = load_checkpoint(weights)
    t, alpha = pick["temperature"], pick["alpha"]
    state = dict(model_weights(ck))
    bias = state["head.bias"]
    state["head.bias"] = (bias.double() - t * alpha * torch.from_numpy(np.log(np.clip(prior, 1e-12, None)))).to(bias.dtype)
    spec = dataclasses.replace(est.spec, temperature=float(t))
    save_checkpoint(args.out, {**ck, "spec": spec.to_dict(), "state_dict": state, "ema_state_dict": None,
                               "config": dataclasses.asdict(cfg),
                               "balance": {"alpha": alpha, "temperature": t, "prior": prior.round(6).tolist()}})
    result = {"model": args.model, "picked": pick, "grid": grid, "out": str(args.out)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"picked": {k: v for k, v in pick.items() if k != "mae_by_group"}, "out": str(args.out)}))


if __name__ == "__main__":
    run_script(main)
