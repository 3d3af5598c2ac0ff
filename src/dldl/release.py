"""The release of a model: from trained runs to a shipped model with its card, in one call.

:func:`release` (``dldl release``) runs these steps in order, each a function of its own:

1. :func:`resolve_runs`: each run through :mod:`dldl.hub` (a run folder is its ``best.pt``; a
   checkpoint; a shipped name), sha256 checked;
2. :func:`combine`: one run is used as it is; several become an ensemble (:func:`dldl.hub.combine`,
   each member first calibrated on its own validation splits by :func:`calibrate`) or, with
   ``soup=True``, a greedy weight soup (:func:`greedy_soup`, :func:`average`);
3. :func:`calibrate`: the softmax temperature fitted on the run's own validation splits (or set
   without data);
4. :func:`reference_quantiles` (beauty models): the quantiles of the model's own estimates on its
   training faces, from which a face's percentile is read;
5. :func:`model_card`: the user's card plus the calibration report, the members, the command and
   the rows of metrics files (:func:`metrics_rows`);
6. :func:`dldl.hub.install`: the fp16 copy and its card into the models folder; an installed model
   is replaced only when asked.

Every intermediate checkpoint (calibrated members, the ensemble or soup, the calibrated model) is
kept in ``out_dir`` under a name no file has yet (:func:`fresh_path`): inputs and existing files are
never written over. Every check a user's input can fail is made before the first network runs, and
fails as one :class:`~dldl.errors.DldlError` line naming the file or option.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dldl import hub
from dldl.checkpoint import model_weights, save_checkpoint
from dldl.data.cache import load_cached
from dldl.data.datasets import get_dataset, load_dataset
from dldl.data.samples import SampleList
from dldl.errors import DataError, DldlError, first_line
from dldl.evaluate import fit_temperature, prediction_report, temperature_fit_rows
from dldl.metrics import mae, pearson
from dldl.models.spec import ModelSpec
from dldl.runtime import Estimator, Prediction
from dldl.training import TrainConfig, load_sources

Log = Callable[[str], None]

MODEL_KEYS = ("spec", "config", "epoch", "step", "metrics", "members", "soup", "state_dict", "ema_state_dict")
"""What a released checkpoint keeps of its input (a ``last.pt``'s optimiser and history are left behind)."""

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REFERENCE_WHAT = ("quantiles 0..100 % of this model's estimates (flip TTA as the model runs it: its spec's tta_flip) "
                  "on its training faces; a face's percentile is read from them")


def _quiet(line: str) -> None:
    pass


# 1. resolve


def resolve_runs(runs: Sequence[str | os.PathLike]) -> list[hub.Weights]:
    """The verified :class:`~dldl.hub.Weights` of each run (a run folder, a checkpoint or a shipped
    name); exported graphs are refused, since they hold no weights to calibrate or combine.

    >>> resolve_runs([])
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: no RUN given: name a run folder, a checkpoint or a shipped model

    Raises:
        DldlError: as :func:`dldl.hub.resolve`, naming the run.
    """
    if not runs:
        raise DldlError("no RUN given: name a run folder, a checkpoint or a shipped model")
    out = []
    for run in runs:
        weights = hub.resolve(run)
        if weights.exported:
            raise DldlError(f"{weights.path}: an exported graph holds no weights to calibrate or combine; give its checkpoint")
        out.append(weights)
    return out


def _payload(checkpoint: Any) -> tuple[dict[str, Any], str]:
    """A checkpoint payload and what to call it in errors, from a payload or anything hub resolves."""
    if isinstance(checkpoint, dict):
        return checkpoint, "the checkpoint"
    weights, ck = hub.checkpoint(checkpoint)
    return ck, str(weights.path)


def model_payload(ck: dict[str, Any]) -> dict[str, Any]:
    """The entries of a checkpoint a released model keeps (:data:`MODEL_KEYS`).

    >>> sorted(model_payload({"spec": {}, "state_dict": {}, "optimizer": {}, "history": []}))
    ['spec', 'state_dict']
    """
    return {k: v for k, v in ck.items() if k in MODEL_KEYS}


# the data a run was validated on


def validation_sets(ck: dict[str, Any], spec: ModelSpec, where: str = "the checkpoint") -> list[tuple[str, SampleList, np.ndarray]]:
    """The validation split of each source the run was trained on (its ``config``; taught sources
    have none), with its crops decoded for ``spec`` (cached as training caches them).

    Raises:
        DldlError: the checkpoint has no training config (a shipped file, an ensemble of such), or
            no validation faces.
    """
    if not ck.get("config"):
        raise DldlError(f"{where}: holds no training config, so no validation splits to fit on; give its run folder, "
                        "or --temperature T to set a temperature without data")
    cfg = TrainConfig.from_checkpoint(ck)
    out = [(src.name, src.val, load_cached(src.val, spec.cache_size, cfg.cache_dir, cfg.workers, template=spec.template))
           for src in load_sources(cfg) if not src.taught and len(src.val)]
    if not out:
        raise DldlError(f"{where}: its training config has no validation faces to fit on; give --temperature T")
    return out


def _subset(pred: Prediction, index: np.ndarray) -> Prediction:
    """The predictions of the faces ``index`` selects (a boolean mask or positions)."""
    return Prediction(pred.estimate[index], None if pred.distribution is None else pred.distribution[index], pred.labels)


# 2. combine


def average(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The uniform average of state dicts with the same keys and shapes (integer buffers such as
    BN's ``num_batches_tracked`` are taken from the first).

    >>> import torch
    >>> a, b = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4)}, {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    >>> out = average([a, b]); out["w"].tolist(), int(out["n"])
    ([2.0, 4.0], 4)
    >>> average([a, {"w": torch.zeros(3), "n": torch.tensor(1)}])
    Traceback (most recent call last):
    ...
    ValueError: state dict 1 does not match the first (keys or shapes differ)
    """
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        if s.keys() != first.keys() or any(s[k].shape != first[k].shape for k in first):
            raise ValueError(f"state dict {i} does not match the first (keys or shapes differ)")
    return {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in first.items()}


def greedy_soup(runs: Sequence[str | os.PathLike], one_view: bool = False, log: Log = _quiet) -> tuple[dict[str, Any], dict[str, Any]]:
    """A greedy weight soup (Wortsman et al., "Model soups", ICML 2022) of runs fine-tuned from
    the same initialisation, and its report.

    The runs are ranked by their own validation score; the best starts the soup, and each next one
    joins (a uniform average of those kept, :func:`average`) when the soup's score rises. The score
    is the mean, over the first run's validation sources (its ``config``), of the Pearson (beauty)
    or minus the MAE (age), from one view with ``one_view``, else as the first run's spec sets
    ``tta_flip``: never a test split. The soup has the spec and config of its best run; calibrate
    it afterwards (:func:`calibrate`). ``log`` gets one line a run tried.

    Raises:
        DldlError: fewer than two runs, or a run of another network (architecture, labels, input size).
    """
    if len(runs) < 2:
        raise DldlError(f"a soup needs at least two runs, got {len(runs)}")
    cks = [hub.checkpoint(r)[1] for r in runs]
    spec = ModelSpec.from_payload(cks[0], runs[0])
    for run, ck in zip(runs[1:], cks[1:]):
        other = ModelSpec.from_payload(ck, run)
        if (other.architecture, other.labels, other.model_kwargs, other.input_size) != (
                spec.architecture, spec.labels, spec.model_kwargs, spec.input_size):
            raise DldlError(f"{run}: another network than {runs[0]} (architecture, labels or input size); "
                            "a soup averages the weights of one network")
    if one_view:
        spec = spec.replace(tta_flip=False)
    sets = validation_sets(cks[0], spec, str(runs[0]))
    model = spec.create_model()

    def score(state: dict[str, Any]) -> tuple[float, dict[str, float]]:
        model.load_state_dict(state)
        est = Estimator(model.eval(), spec)
        per = {}
        for name, val, images in sets:
            pred, true = est.predict_arrays(images).estimate, [s.label for s in val.samples]
            per[name or "val"] = round(pearson(pred, true) if spec.task == "beauty" else -mae(pred, true), 4)
        return float(np.mean(list(per.values()))), per

    own = [score(model_weights(ck)) for ck in cks]
    order = sorted(range(len(cks)), key=lambda i: -own[i][0])
    tried = []
    for i in order:
        log(f"{runs[i]}: validation score {own[i][0]:.4f} {json.dumps(own[i][1])}")
    kept, best, state = [order[0]], own[order[0]][0], model_weights(cks[order[0]])
    for i in order[1:]:
        trial_state = average([model_weights(cks[j]) for j in kept + [i]])
        trial, per = score(trial_state)
        tried.append({"run": str(runs[i]), "soup_score": round(trial, 4), "kept": trial > best})
        log(f"+ {runs[i]}: soup score {trial:.4f} {json.dumps(per)} -> {'kept' if trial > best else 'left out'}")
        if trial > best:
            kept, best, state = kept + [i], trial, trial_state
    report = {"score": "mean over the first run's validation sources of the Pearson (beauty) or minus the MAE (age)",
              "own_scores": {str(runs[i]): round(own[i][0], 4) for i in range(len(runs))}, "tried": tried,
              "ingredients": [str(runs[j]) for j in kept], "val_score": round(best, 4)}
    payload = {**model_payload(cks[kept[0]]), "state_dict": state, "ema_state_dict": None,
               "soup": {"ingredients": report["ingredients"], "val_score": report["val_score"]}}
    return payload, report


def combine(runs: Sequence[str | os.PathLike], soup: bool = False, one_view: bool = False,
            log: Log = _quiet) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model the runs make together, as a checkpoint payload, and how it was made: one run as
    it is; several as an ensemble (:func:`dldl.hub.combine`: the mean of the members' distributions,
    each at its own temperature) or, with ``soup``, a greedy weight soup (:func:`greedy_soup`).

    Raises:
        DldlError: as :func:`dldl.hub.combine` and :func:`greedy_soup`, naming the run that does not fit.
    """
    if soup:
        payload, report = greedy_soup(runs, one_view, log)
        return payload, {"kind": "soup", **report}
    if len(runs) == 1:
        return model_payload(hub.checkpoint(runs[0])[1]), {"kind": "single"}
    return hub.combine(list(runs)), {"kind": "ensemble"}


# 3. calibrate


def calibrate(checkpoint: Any, one_view: bool = False, level: float = 0.9, temperature: float | None = None,
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of a checkpoint (a payload, or anything :func:`dldl.hub.resolve` takes) whose spec
    has the temperature fitted so that its central ``level`` intervals cover a share ``level`` of
    the held-out truths, and the report of the fit.

    The truths are the run's own validation splits (:func:`validation_sets`, every source of a
    mixed run, pooled); the rows fitted on are :func:`dldl.evaluate.temperature_fit_rows`'s (each
    image once, exact labels only when there are any). The temperature is absolute (fitted on the
    network's raw distribution, whatever temperature the input had). ``one_view`` also sets the
    spec's ``tta_flip`` to false (the model then runs without the mirror-image average) and fits on
    that view. ``temperature`` sets that temperature instead and reads no data (``1``: the
    network's own distribution, as a distillation teacher gives it).

    The report: ``temperature``, ``fitted``, ``tta_flip`` and, when fitted, ``level``,
    ``fitted_on`` (faces), ``val_coverage`` and each source's MAE, 90% coverage and width
    ``_before`` (the input as it was) and ``_after``.

    >>> calibrate({}, temperature=0)
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --temperature 0: must be a number > 0

    Raises:
        DldlError: a bad ``temperature`` or ``level``; no training config or no validation faces;
            an objective without distributions.
    """
    check_calibration(temperature, level)
    ck, where = _payload(checkpoint)
    spec = ModelSpec.from_payload(ck, where)
    if one_view:
        spec = spec.replace(tta_flip=False)
    if temperature is not None:
        spec = spec.replace(temperature=float(temperature))
        return {**model_payload(ck), "spec": spec.to_dict()}, {"temperature": spec.temperature, "fitted": False,
                                                               "tta_flip": spec.tta_flip}
    est = Estimator(Estimator.from_payload(ck, where).model, spec)
    if est.objective.distribution is None:
        raise DldlError(f"{where}: objective {spec.objective!r} predicts no distribution, so it has no temperature to fit")
    sets = validation_sets(ck, spec, where)
    samples = [s for _, v, _ in sets for s in v.samples]
    images = np.concatenate([images for _, _, images in sets])
    raw = Estimator(est.model, spec.replace(temperature=1.0)).predict_arrays(images)
    before = raw if spec.temperature == 1.0 else est.predict_arrays(images)
    fit = temperature_fit_rows(samples)
    t, cov = fit_temperature(_subset(raw, fit), SampleList("pooled-val", [s for s, f in zip(samples, fit) if f]), level)
    spec = spec.replace(temperature=t)
    after = Estimator(est.model, spec).predict_arrays(images)
    report: dict[str, Any] = {"temperature": t, "fitted": True, "tta_flip": spec.tta_flip, "level": level,
                              "fitted_on": int(fit.sum()), "val_coverage": round(cov, 4), "sources": {}}
    start = 0
    for name, val, _ in sets:
        part = np.arange(start, start + len(val))
        start += len(val)
        old, new = (prediction_report(_subset(p, part), val, spec.task) for p in (before, after))
        report["sources"][name or "val"] = {"count": len(val), **{f"{k}_before": round(old[k], 4) for k in ("mae", "coverage_90", "width_90")},
                                            **{f"{k}_after": round(new[k], 4) for k in ("mae", "coverage_90", "width_90")}}
    return {**model_payload(ck), "spec": spec.to_dict()}, report


def check_calibration(temperature: float | None, level: float = 0.9) -> None:
    """Refuse a temperature that is not a finite number > 0, or a level outside (0, 1).

    >>> check_calibration(0.5, 0.9)
    >>> check_calibration(None, 1.0)
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --level 1.0: must be a share between 0 and 1, e.g. 0.9
    """
    if temperature is not None and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise DldlError(f"--temperature {temperature}: must be a number > 0")
    if not 0 < level < 1:
        raise DldlError(f"--level {level}: must be a share between 0 and 1, e.g. 0.9")


# 4. reference quantiles


@dataclasses.dataclass(frozen=True)
class Reference:
    """The faces a beauty model's percentiles refer to: ``dataset``, ``root`` and ``split``."""

    dataset: str
    root: str
    split: str | None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """``DATASET:ROOT[:SPLIT]`` (``--reference``); without SPLIT, the dataset's training split;
        an empty SPLIT is none (a CSV file).

        >>> Reference.parse("mebeauty:../shared/data/mebeauty:train")
        Reference(dataset='mebeauty', root='../shared/data/mebeauty', split='train')
        >>> Reference.parse("mebeauty:../shared/data/mebeauty").split, Reference.parse("csv:faces.csv:").split
        ('train', None)
        >>> Reference.parse("imdb:/data:train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dldl.errors.DldlError: --reference imdb:/data:train: unknown dataset 'imdb' (known: csv, utkface, ...)
        """
        dataset, sep, rest = text.partition(":")
        if not sep or not dataset or not rest:
            raise DldlError(f"--reference {text}: expected DATASET:ROOT[:SPLIT], e.g. mebeauty:../shared/data/mebeauty:train")
        try:
            info = get_dataset(dataset)
        except DataError as e:
            raise DldlError(f"--reference {text}: {e}") from None
        root, sep, split = rest.rpartition(":")
        if not sep:
            root, split = rest, info.train_split
        return cls(info.name, root, split or None)

    def samples(self) -> SampleList:
        """The faces (their labels are not used).

        Raises:
            DldlError: naming ``--reference`` and the dataset's problem (a missing root or split)."""
        try:
            return load_dataset(self.dataset, self.root, self.split)
        except DataError as e:
            raise DldlError(f"--reference {self.dataset}:{self.root}:{self.split or ''}: {e}") from None


def quantile_table(estimates: np.ndarray) -> list[float]:
    """The 0, 1, ..., 100 % quantiles of ``estimates``, to 4 decimals.

    >>> table = quantile_table(np.arange(201.0) / 20)
    >>> len(table), table[:3], table[-1]
    (101, [0.0, 0.1, 0.2], 10.0)
    """
    return [round(float(v), 4) for v in np.quantile(estimates, np.linspace(0, 1, 101))]


def reference_quantiles(checkpoint: Any, reference: Reference, command: str | None = None) -> dict[str, Any]:
    """The card's ``reference_estimates``: the quantiles (:func:`quantile_table`) of the model's own
    estimates on the ``reference`` faces (its training faces), as shipped (fp16 weights) and with
    its own ``tta_flip``. ``dldl predict`` then reports each face's percentile among them: the
    model's estimates, not the raters' scores, are the reference, since a model pulls its estimates
    towards the mean and a percentile among its own estimates undoes that compression."""
    ck, where = _payload(checkpoint)
    shipped = {k: v.half() if v.is_floating_point() else v for k, v in model_weights(ck).items()}
    est = Estimator.from_payload({**ck, "state_dict": shipped, "ema_state_dict": None}, where)
    samples = reference.samples()
    images = load_cached(samples, est.cache_size, None, 1, template=est.template)
    estimates = est.predict_arrays(images).estimate
    out = {"what": REFERENCE_WHAT, "dataset": reference.dataset, "split": reference.split, "count": int(len(estimates))}
    if command:
        out["command"] = command
    return {**out, "quantiles": quantile_table(estimates)}


# 5. model card


def read_json(path: str | os.PathLike, option: str) -> Any:
    """The JSON value in ``path``; ``option`` names it in errors.

    >>> read_json("/no/such/card.json", "--card")
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --card /no/such/card.json: file not found
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DldlError(f"{option} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DldlError(f"{option} {path}: cannot be read ({getattr(e, 'strerror', None) or first_line(e)})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise DldlError(f"{option} {path}: not valid JSON ({first_line(e)})") from None


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The user's card fields (a JSON object: summary, data, licence, ...)."""
    card = read_json(path, "--card")
    if not isinstance(card, dict):
        raise DldlError(f"--card {path}: must be a JSON object of the card's fields, not a {type(card).__name__}")
    return card


def _scalars(d: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    return {f"{k}{suffix}": v for k, v in d.items() if v is None or isinstance(v, (str, int, float, bool))}


def metrics_rows(doc: Any, source: str = "") -> list[dict[str, Any]]:
    """The rows of a metrics file: a ``dldl eval --json`` / ``--out`` report (one row: its numbers,
    those without flip TTA as ``<metric>_no_tta``), a ``benchmarks/generalization.py --json`` table
    (one row a model and set, with the command that measured it) or a list of rows. Each row names
    its ``source`` file.

    >>> metrics_rows({"model": "m", "dataset": "utkface", "split": "full_test", "mae": 4.8, "cs": [0.1], "no_flip": {"mae": 4.9}}, "e.json")
    [{'model': 'm', 'dataset': 'utkface', 'split': 'full_test', 'mae': 4.8, 'mae_no_tta': 4.9, 'source': 'e.json'}]
    >>> metrics_rows({"command": "python benchmarks/generalization.py", "results": {"m": {"fgnet all": {"mae": 4.8}}}})
    [{'model': 'm', 'set': 'fgnet all', 'mae': 4.8, 'command': 'python benchmarks/generalization.py'}]
    >>> metrics_rows({"mae": 1}, "x.json")
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --metrics x.json: not a table of metrics (a dldl eval report, a benchmarks/generalization.py --json table, or a list of objects)
    """
    where = {"source": source} if source else {}
    if isinstance(doc, list) and all(isinstance(row, dict) for row in doc):
        return [{**row, **where} for row in doc]
    if isinstance(doc, dict) and isinstance(doc.get("results"), dict) and all(
            isinstance(sets, dict) and all(isinstance(m, dict) for m in sets.values()) for sets in doc["results"].values()):
        command = {"command": doc["command"]} if "command" in doc else {}
        return [{"model": model, "set": name, **_scalars(m), **command, **where}
                for model, sets in doc["results"].items() for name, m in sets.items()]
    if isinstance(doc, dict) and "model" in doc and "dataset" in doc:
        return [{**_scalars(doc), **_scalars(doc.get("no_flip") or {}, "_no_tta"), **where}]
    raise DldlError(f"--metrics {source}: not a table of metrics (a dldl eval report, a benchmarks/generalization.py "
                    "--json table, or a list of objects)")


def read_metrics(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """The rows (:func:`metrics_rows`) of every ``--metrics`` file, in order."""
    return [row for p in paths for row in metrics_rows(read_json(p, "--metrics"), os.fspath(p))]


def model_card(base: dict[str, Any], calibration: dict[str, Any], *, run: dict[str, Any] | None = None,
               members: list[dict[str, Any]] | None = None, combined: dict[str, Any] | None = None,
               metrics: list[dict[str, Any]] | None = None, reference: dict[str, Any] | None = None,
               command: str | None = None, sources_seen: list[str] | None = None) -> dict[str, Any]:
    """The card to install: the user's fields (``base``) plus what the release measured: the
    ``temperature`` and its ``calibration`` report, the ``run`` (one) or the ``members`` and how
    they were ``combined`` (several), the ``metrics`` rows, the ``reference_estimates``, the
    ``release_command`` and the ``sources_seen`` of the runs (what benchmarks mark in-domain). A
    user's ``members`` list of the same length is merged member by member (their training commands
    stay); any other of these keys the user gave is replaced by the
    release's value, with a warning (``name``, ``spec``, ``sha256`` and ``bytes`` are
    :func:`dldl.hub.install`'s).

    >>> card = model_card({"summary": "s", "members": [{"command": "dldl train a"}, {"command": "dldl train b"}]},
    ...                   {"temperature": 0.9, "fitted": False}, members=[{"run": "a"}, {"run": "b"}])
    >>> card["members"], card["temperature"]
    ([{'command': 'dldl train a', 'run': 'a'}, {'command': 'dldl train b', 'run': 'b'}], 0.9)
    """
    new: dict[str, Any] = {"temperature": calibration["temperature"], "calibration": calibration}
    if run is not None:
        new["run"] = run
    merged = False
    if members is not None:
        old = base.get("members")
        merged = isinstance(old, list) and len(old) == len(members) and all(isinstance(m, dict) for m in old)
        new["members"] = [{**o, **m} for o, m in zip(old, members)] if merged else members
        new["combined"] = combined
    if metrics is not None:
        new["metrics"] = metrics
    if reference is not None:
        new["reference_estimates"] = reference
    if command is not None:
        new["release_command"] = command
    if sources_seen is not None:
        new["sources_seen"] = sources_seen
    replaced = [k for k in new if k in base and base[k] != new[k] and not (k == "members" and merged)]
    if replaced:
        warnings.warn(f"--card: the card's {', '.join(replaced)} replaced by this release's", UserWarning, stacklevel=2)
    return {**base, **new}


# 6. install, and where the intermediates go


def fresh_path(folder: str | os.PathLike, stem: str, suffix: str = ".pt") -> Path:
    """``folder/stem.suffix``, or ``folder/stem-2.suffix`` (``-3``, ...) when that exists: a name no
    file has, so nothing is written over.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> fresh_path(d, "toy.calibrated").name
    'toy.calibrated.pt'
    >>> _ = (d / "toy.calibrated.pt").write_bytes(b""); fresh_path(d, "toy.calibrated").name
    'toy.calibrated-2.pt'
    """
    folder = Path(folder)
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def save_new(path: str | os.PathLike, payload: dict[str, Any], option: str = "--out") -> Path:
    """Write a checkpoint payload to ``path``, which must not exist (an input or an earlier result
    is never written over).

    Raises:
        DldlError: ``path`` exists; CheckpointError: the write failed.
    """
    check_new(path, option)
    return save_checkpoint(path, payload)


def check_new(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse an output path that exists already (before any work is done).

    >>> check_new(__file__, "--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --out .../release.py: exists already; give a new file name
    """
    if Path(path).exists() or Path(path).is_symlink():
        raise DldlError(f"{option} {path}: exists already; give a new file name")


def check_name(name: str, models_dir: Path, replace: bool) -> None:
    """Refuse a model name that is not a plain file name, or one installed in ``models_dir``
    already (unless ``replace``).

    >>> check_name("../x", Path("."), False)
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: --name '../x': must be letters, digits, '.', '_' or '-' (a file name without a folder)
    """
    if not NAME.fullmatch(name) or name.endswith((".pt", ".json")):
        raise DldlError(f"--name {name!r}: must be letters, digits, '.', '_' or '-' (a file name without a folder)")
    installed = [p for p in (models_dir / f"{name}.pt", models_dir / f"{name}.json") if p.exists()]
    if installed and not replace:
        raise DldlError(f"--name {name}: {installed[0]} exists already; give --replace to replace the installed model")


def default_out_dir(run: str | os.PathLike, weights: hub.Weights) -> Path:
    """Where a release keeps its intermediates by default: the first run's folder (the folder
    given, or the checkpoint's); a shipped model has none (give ``--out-dir``)."""
    if weights.card:
        raise DldlError(f"--out-dir: the first RUN {os.fspath(run)} is a shipped model; give --out-dir DIR for the "
                        "intermediate checkpoints")
    return Path(run) if Path(run).is_dir() else weights.path.parent


@dataclasses.dataclass
class Released:
    """What :func:`release` wrote: the installed ``model`` and its ``card`` file, the ``kept``
    intermediate checkpoints, and the card's content (``card_data``)."""

    model: Path
    card: Path
    kept: list[Path]
    card_data: dict[str, Any]


def release(runs: Sequence[str | os.PathLike], name: str, card: str | os.PathLike, *, one_view: bool = False,
            temperature: float | None = None, level: float = 0.9, soup: bool = False, reference: str | None = None,
            metrics: Sequence[str | os.PathLike] = (), models_dir: str | os.PathLike | None = None,
            out_dir: str | os.PathLike | None = None, replace: bool = False, command: str | None = None,
            log: Log = _quiet) -> Released:
    """Release ``runs`` as the model ``name``: resolve, combine, calibrate, reference quantiles,
    card, install (the module's steps 1-6), into ``models_dir`` (default: the package's models
    folder, :data:`dldl.hub.MODELS_DIR`) with the card fields of the JSON file ``card``.

    Several runs make an ensemble whose members are each calibrated first (unless ``temperature``
    is given: then the members are used as they are and the ensemble gets ``temperature``), or with
    ``soup`` a weight soup. ``reference``: ``DATASET:ROOT[:SPLIT]`` (:class:`Reference`);
    ``metrics``: files of :func:`metrics_rows`; ``command``: the command line, for the card.
    Intermediates are kept in ``out_dir`` (default: the first run's folder) under fresh names.
    ``log`` gets a line for each step and each file written.

    Raises:
        DldlError: one line naming the option or file, before any network runs for every check
            of the inputs (name, card, metrics, reference, runs, output folder).
    """
    check_calibration(temperature, level)
    if soup and len(runs) < 2:
        raise DldlError(f"--soup: a soup needs at least two RUNs, got {len(runs)}")
    models_dir = Path(models_dir) if models_dir is not None else hub.MODELS_DIR
    check_name(name, models_dir, replace)
    base = read_card(card)
    rows = read_metrics(metrics) if metrics else None
    ref = Reference.parse(reference) if reference is not None else None
    if ref is not None:
        ref.samples()  # a bad root or split is named now, not after the calibration
    weights = resolve_runs(runs)  # 1
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs[0], weights[0])
    if out.exists() and not out.is_dir():
        raise DldlError(f"--out-dir {out}: is a file; give a folder")
    kept: list[Path] = []

    def keep(payload: dict[str, Any], stem: str) -> Path:
        path = save_checkpoint(fresh_path(out, stem), payload)
        kept.append(path)
        log(f"wrote {path}")
        return path

    def entry(run: str | os.PathLike, w: hub.Weights) -> dict[str, Any]:
        return {"run": os.fspath(run), "checkpoint": str(w.path), "sha256": w.sha256}

    # 2. combine
    run_entry = members = combined = None
    if len(weights) == 1:
        model, run_entry = weights[0].path, entry(runs[0], weights[0])
    elif soup:
        log(f"soup of {len(runs)} runs, scored on {runs[0]}'s validation splits")
        payload, report = combine([w.path for w in weights], soup=True, one_view=one_view, log=log)
        model = keep(payload, f"{name}.soup")
        own, chosen = report["own_scores"], set(report["ingredients"])
        members = [{**entry(r, w), "val_score": own[str(w.path)], "in_soup": str(w.path) in chosen} for r, w in zip(runs, weights)]
        combined = {"kind": "soup", "val_score": report["val_score"], "score": report["score"], "tried": report["tried"]}
    else:
        parts, members = [], []
        for i, (r, w) in enumerate(zip(runs, weights), 1):
            if temperature is None:
                payload, report = calibrate(w.path, one_view, level)
                log(f"member {i} ({os.fspath(r)}): temperature {report['temperature']:g}, "
                    f"{level:.0%} coverage {report['val_coverage']} on {report['fitted_on']} validation faces")
                parts.append(keep(payload, f"{name}.member{i}.calibrated"))
                members.append({**entry(r, w), "temperature": report["temperature"], "calibration": report})
            else:
                parts.append(w.path)
                members.append(entry(r, w))
        payload, _ = combine(parts)
        for member, t in zip(members, payload["state_dict"]["temperatures"].tolist()):
            member["temperature"] = round(t, 6)
        model = keep(payload, f"{name}.ensemble")
        combined = {"kind": "ensemble", "members_calibrated": temperature is None}
    # 3. calibrate
    payload, calibration = calibrate(model, one_view, level, temperature)
    if calibration["fitted"]:
        log(f"{name}: temperature {calibration['temperature']:g}, {level:.0%} coverage {calibration['val_coverage']} "
            f"on {calibration['fitted_on']} validation faces")
    calibrated = keep(payload, f"{name}.calibrated")
    # 4. reference quantiles
    reference_estimates = reference_quantiles(payload, ref, command) if ref is not None else None
    # 5. card
    seen = [hub.sources_seen(w.path) for w in weights]  # from each run's config; None where a run does not say
    card_data = model_card(base, calibration, run=run_entry, members=members, combined=combined, metrics=rows,
                           reference=reference_estimates, command=command,
                           sources_seen=sorted(set().union(*seen)) if all(s is not None for s in seen) else None)
    # 6. install
    path = hub.install(calibrated, name, card_data, models_dir)
    log(f"wrote {path}")
    log(f"wrote {path.with_suffix('.json')}")
    return Released(path, path.with_suffix(".json"), kept, json.loads(path.with_suffix(".json").read_text()))
