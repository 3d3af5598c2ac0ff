"""Greedy weight soup (Wortsman et al., "Model soups", ICML 2022): average the weights of runs
fine-tuned from the same initialisation, keeping an ingredient only if it raises the validation score.

The runs are ranked by their own score; the best one starts the soup, and each next one is added
(a uniform average of the kept ones) when the soup's score rises. The score is the mean, over the
first run's sources (its ``config``), of the validation Pearson (beauty) or minus the validation MAE
(age), with flip TTA as the first run's spec sets it (``tta_flip``), so a mixed run is chosen on every set it was trained for, never on a test
split. The soup is written with the first run's spec and config; its temperature is that run's,
so calibrate it afterwards (``experiments/calibrate.py``). Runs must share the architecture and
labels; runs from different initialisations do not average into a working network.

    python experiments/soup.py runs/a/best.pt runs/b/best.pt runs/c/best.pt --out runs/soup/best.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dldl.checkpoint import load_checkpoint, model_weights, save_checkpoint
from dldl.data.cache import load_cached
from dldl.runtime import Estimator
from dldl.metrics import mae, pearson
from dldl.models.spec import ModelSpec
from dldl.training import TrainConfig, load_sources
from dldl.errors import run_script


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts with the same keys and shapes (integer buffers such as
    BN's ``num_batches_tracked`` are taken from the first).

    >>> a, b = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4)}, {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    >>> out = average([a, b]); out["w"].tolist(), int(out["n"])
    ([2.0, 4.0], 4)
    """
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        if s.keys() != first.keys() or any(s[k].shape != first[k].shape for k in first):
            raise ValueError(f"state dict {i} does not match the first (keys or shapes differ)")
    return {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in first.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.out.exists() or args.out.resolve() in {p.resolve() for p in args.checkpoints}:
        raise SystemExit(f"{args.out}: exists or is an input; give a new file name")
    cks = [load_checkpoint(p) for p in args.checkpoints]
    spec = ModelSpec.from_payload(cks[0], args.checkpoints[0])
    for p, ck in zip(args.checkpoints[1:], cks[1:]):
        other = ModelSpec.from_payload(ck, p)
        if (other.architecture, other.labels, other.model_kwargs, other.input_size) != (
                spec.architecture, spec.labels, spec.model_kwargs, spec.input_size):
            raise SystemExit(f"{p}: another network than {args.checkpoints[0]} (architecture, labels or input size)")
    cfg = TrainConfig.from_checkpoint(cks[0])
    model = spec.create_model()
    vals = [(src.name, src.val) for src in load_sources(cfg) if not src.taught]
    images = {name: load_cached(v, spec.cache_size, cfg.cache_dir, cfg.workers, template=spec.template) for name, v in vals}

    def score(state: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        model.load_state_dict(state)
        est = Estimator(model.eval(), spec)
        per = {}
        for name, v in vals:
            pred, true = est.predict_arrays(images[name]).estimate, [s.label for s in v.samples]
            per[name] = pearson(pred, true) if spec.task == "beauty" else -mae(pred, true)
        return float(np.mean(list(per.values()))), per

    own = [score(model_weights(ck)) for ck in cks]
    order = sorted(range(len(cks)), key=lambda i: -own[i][0])
    for i in order:
        print(f"{args.checkpoints[i]}: {own[i][0]:.4f} {json.dumps({k: round(v, 4) for k, v in own[i][1].items()})}")
    kept, best, soup = [order[0]], own[order[0]][0], model_weights(cks[order[0]])
    for i in order[1:]:
        trial_soup = average([model_weights(cks[j]) for j in kept + [i]])
        trial, per = score(trial_soup)
        print(f"+ {args.checkpoints[i]}: {trial:.4f} {json.dumps({k: round(v, 4) for k, v in per.items()})}"
              f" -> {'kept' if trial > best else 'left out'}")
        if trial > best:
            kept, best, soup = kept + [i], trial, trial_soup
    ingredients = [str(args.checkpoints[j]) for j in kept]
    save_checkpoint(args.out, {**cks[kept[0]], "state_dict": soup, "ema_state_dict": soup,
                               "soup": {"ingredients": ingredients, "val_score": best}})
    print(json.dumps({"out": str(args.out), "ingredients": ingredients, "val_score": round(best, 4)}))


if __name__ == "__main__":
    run_script(main)
