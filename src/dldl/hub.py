"""The one way from a model's name to verified weights, and from weights to a ready Estimator.

A model is asked for by a shipped name (``mobilenet_v2-age``), a checkpoint path, a run folder
(``runs/x``: its ``best.pt``) or an exported ``.onnx`` / ``.torchscript`` file. :func:`resolve`
turns any of them into :class:`Weights` (the file and its sha256, checked against the model card
whenever the file is a shipped one, whatever it was asked for by), and :func:`load` into an
:class:`~dldl.runtime.Estimator` that knows its name and version. Prediction, evaluation,
``init_from``, distillation teachers and ensembles all go through here, so a damaged or swapped
shipped file is refused everywhere alike.

Each shipped model is ``assets/models/<name>.pt`` (a weights-only checkpoint, fp16) beside
``<name>.json``, its model card (data, split, metrics, licence terms, the file's ``sha256``);
:func:`install` writes both.

On the CPU a torch checkpoint runs through ONNX Runtime: it is exported once to
``<cache>/onnx/<sha256 of the weights>.onnx`` (:func:`dldl.files.cache_dir`) and reused while that
copy checks out.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dldl import files
from dldl.assets import MODELS_DIR
from dldl.errors import CheckpointError, DldlError, first_line
from dldl.files import atomic_path, file_sha256
from dldl.models.spec import ModelSpec
from dldl.runtime import Estimator, load_exported

if TYPE_CHECKING:
    import torch

RUNTIMES = ("torch", "onnx", "auto")
EXPORTED_SUFFIXES = (".onnx", ".torchscript")
RUN_CHECKPOINT = "best.pt"
"""The checkpoint a run folder stands for (the epoch with the best validation score)."""


def list_pretrained() -> list[str]:
    """Names of the models shipped with this package (``[]`` if none)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json") if (MODELS_DIR / f"{p.stem}.pt").exists())


def model_card(name: str) -> dict[str, Any]:
    """The model card of a shipped model.

    Raises:
        DldlError: no shipped model of that name; or its card is not valid JSON.
    """
    path = MODELS_DIR / f"{name}.json"
    if not path.exists():
        known = ", ".join(list_pretrained()) or "none shipped yet"
        raise DldlError(f"no shipped model called {name!r} (shipped: {known})")
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise DldlError(f"{path}: the model card is damaged ({first_line(e)})") from None


@dataclass(frozen=True)
class Weights:
    """A model file found and checked: ``path``, its ``sha256`` and, for a shipped model, its
    ``card`` (``{}`` otherwise); ``name`` is what it was asked for by."""

    name: str
    path: Path
    sha256: str
    card: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def exported(self) -> bool:
        """Whether the file is an exported graph (``.onnx`` / ``.torchscript``), not a checkpoint."""
        return self.path.suffix.lower() in EXPORTED_SUFFIXES


def _shipped_name(path: Path) -> str | None:
    """The shipped model ``path`` is a file of (its checkpoint ``.pt`` or its ``.onnx``), however it
    was named (by name, or by a path into the package's models folder), else ``None``."""
    try:
        if path.suffix in (".pt", ".onnx") and path.resolve().parent == MODELS_DIR.resolve() and \
                (MODELS_DIR / f"{path.stem}.json").exists():
            return path.stem
    except OSError:
        pass
    return None


def _expected_sha256(path: Path, card: dict[str, Any]) -> str | None:
    """What the card says ``path`` (its checkpoint, or its ONNX graph) must hash to."""
    return (card.get("onnx") or {}).get("sha256") if path.suffix == ".onnx" else card.get("sha256")


def resolve(name_or_path: str | os.PathLike) -> Weights:
    """The :class:`Weights` of a shipped model name, a checkpoint or exported file, or a run folder.

    A shipped model's file must match the sha256 of its card, whether asked for by name or by path.

    >>> resolve("mobilenet_v2-beauty").path.name
    'mobilenet_v2-beauty.pt'
    >>> resolve("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: no-such-model: neither a file nor a shipped model ...

    Raises:
        DldlError: neither a file nor a shipped name; CheckpointError: a missing file, a run
            folder without ``best.pt``, or a shipped file whose sha256 does not match its card.
    """
    if name_or_path is None or not isinstance(name_or_path, (str, os.PathLike)):
        raise DldlError(f"a model is a shipped name or a file path, not {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    path = Path(text)
    if not path.exists() and text in list_pretrained():
        path = MODELS_DIR / f"{text}.pt"
    elif path.is_dir():
        if not (path / RUN_CHECKPOINT).is_file():
            raise CheckpointError(path, f"a folder without {RUN_CHECKPOINT}: give a run folder of dldl train, or the file")
        path = path / RUN_CHECKPOINT
    elif not path.exists():
        if path.suffix.lower() in (".pt", ".pth", *EXPORTED_SUFFIXES):
            raise CheckpointError(path, "model file not found")
        known = ", ".join(list_pretrained()) or "none shipped yet"
        raise DldlError(f"{text}: neither a file nor a shipped model (shipped: {known})")
    try:
        sha = file_sha256(path)
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror or first_line(e)})") from None
    shipped = _shipped_name(path)
    card = model_card(shipped) if shipped else {}
    if shipped and sha != _expected_sha256(path, card):
        raise CheckpointError(path, "sha256 does not match its model card; the file is damaged or was replaced")
    return Weights(text, path, sha, card)


def shipped_graph(weights: Weights) -> Weights | None:
    """The ONNX graph shipped beside a shipped checkpoint (its card's ``onnx`` entry), checked, or
    ``None`` when the card names none: what predicts without torch."""
    entry = weights.card.get("onnx")
    if not entry or weights.exported:
        return None
    return resolve(weights.path.with_name(entry["file"]))


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", runtime: str = "torch",
         threads: int | None = None) -> Estimator:
    """A ready :class:`~dldl.runtime.Estimator` from anything :func:`resolve` takes.

    ``runtime="onnx"`` runs a torch checkpoint through ONNX Runtime (exported once into the cache,
    reused while that copy checks out: its recorded sha256, the same spec). ``"auto"`` (what
    ``dldl predict`` and ``dldl.predict`` use) is ONNX Runtime on the CPU, and torch on a GPU or
    when the export cannot be made or cached (a warning says why). ``threads``: ONNX Runtime's
    intra-op threads (default: one per core).

    >>> load("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: no-such-model: neither a file nor a shipped model ...
    """
    if runtime not in RUNTIMES:
        raise DldlError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if device != "cpu":  # torch names the device (a bad --device is named as such, before any model file is read)
        from dldl.devices import resolve_device

        device = resolve_device(device)
    on_cpu = device == "cpu" or device.type == "cpu"
    auto = runtime == "auto"
    if auto:
        runtime = "onnx" if on_cpu else "torch"
    weights = resolve(name_or_path)
    meta = _card_meta(weights)
    if weights.exported:
        return _named(load_exported(weights.path, threads), weights, meta)
    graph = shipped_graph(weights) if runtime == "onnx" else None
    if graph is not None:  # a shipped model's own ONNX graph, vouched for by its card: no torch, no export, no graph check
        return _named(load_exported(graph.path, threads, graph.card["onnx"]["sha256"]), weights, meta)
    card_spec = ModelSpec.from_dict(weights.card["spec"]) if "spec" in weights.card else None
    onnx_path = files.cache_dir() / "onnx" / f"{weights.sha256}.onnx"
    if runtime == "onnx" and card_spec is not None:  # a shipped model exported before: no torch network to build
        cached = _cached_onnx(onnx_path, card_spec, threads)
        if cached is not None:
            return _named(cached, weights, meta)
    estimator = _named(Estimator.from_checkpoint(weights.path, device, card_spec), weights, meta)
    if runtime == "torch":
        return estimator
    try:
        onnx = _onnx_copy(estimator, onnx_path, threads)
    except (OSError, DldlError, RuntimeError) as e:
        if not auto:
            raise
        warnings.warn(f"running {weights.name} with torch: its ONNX copy could not be made ({first_line(e)})", RuntimeWarning, stacklevel=2)
        return estimator
    onnx.meta.update(estimator.meta)
    return _named(onnx, weights, meta)


def _named(estimator: Estimator, weights: Weights, meta: dict[str, Any]) -> Estimator:
    estimator.name = weights.name
    estimator.meta.update(meta)
    return estimator


def _card_meta(weights: Weights) -> dict[str, Any]:
    """What an estimator carries from its file and card: the weights' sha256 (its version) and,
    for beauty models, the quantiles of its estimates on its training faces (for percentiles)."""
    meta: dict[str, Any] = {"sha256": weights.sha256}
    ref = weights.card.get("reference_estimates")
    if ref:
        q = ref.get("quantiles") if isinstance(ref, dict) else None
        try:
            ok = q is not None and len(q) == 101 and all(math.isfinite(float(v)) for v in q) and \
                all(float(a) <= float(b) for a, b in zip(q, q[1:]))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(weights.path.with_suffix(".json"), "the model card's reference_estimates are damaged "
                                  "(they must hold 101 non-decreasing quantiles); reinstall the model")
        meta["reference_quantiles"] = [float(v) for v in q]
    return meta


def _cached_onnx(path: Path, spec: ModelSpec, threads: int | None = None) -> Estimator | None:
    """The ONNX Runtime copy cached at ``path`` if its sha256 matches the record beside it and it
    describes the network of ``spec``; else ``None``."""
    try:
        if path.is_file() and path.with_suffix(".sha256").read_text().strip() == file_sha256(path):
            cached = load_exported(path, threads)
            if cached.spec == spec:
                return cached
    except (OSError, CheckpointError):
        pass
    return None


def _onnx_copy(estimator: Estimator, path: Path, threads: int | None = None) -> Estimator:
    """``estimator`` run by ONNX Runtime from ``path``, its export cached under the sha256 of the
    weights it came from. The cached file is used only if it checks out (:func:`_cached_onnx`); a
    damaged, truncated or swapped file is exported again."""
    from dldl.export import export

    cached = _cached_onnx(path, estimator.spec, threads)
    if cached is not None:
        return cached
    export(estimator, path, "onnx")
    with atomic_path(path.with_suffix(".sha256")) as tmp:
        tmp.write_text(file_sha256(path) + "\n")
    return load_exported(path, threads)


def checkpoint(name_or_path: str | os.PathLike) -> tuple[Weights, dict[str, Any]]:
    """The verified :class:`Weights` of a torch checkpoint and its payload (read weights-only), for
    those who need the tensors themselves: ``init_from``, ensembles, soups.

    Raises:
        DldlError: an exported file (it holds a graph, not weights), or as :func:`resolve` and
            :func:`dldl.checkpoint.load_checkpoint`.
    """
    from dldl.checkpoint import load_checkpoint

    weights = resolve(name_or_path)
    if weights.exported:
        raise DldlError(f"{weights.path}: an exported graph holds no trainable weights; give its checkpoint or shipped name")
    return weights, load_checkpoint(weights.path)


def sources_seen(name_or_path: str | os.PathLike, config: dict[str, Any] | None = None) -> list[str] | None:
    """The datasets a model trained on, for marking the results on them in-domain: its card's
    ``sources_seen`` (a shipped model's card, or the ``NAME.json`` beside a model that ``dldl release
    --models-dir`` put elsewhere), else its run config's ``extra.sources_seen``, the datasets of its
    ``sources`` or its ``dataset``; ``None`` when none of these says (an exported graph without a
    card). ``config``: the run config, when the caller has read the checkpoint already.

    >>> sources_seen("mobilenet_v2-utkface")
    ['utkface']
    """
    weights = resolve(name_or_path)
    card = weights.card
    beside = weights.path.with_suffix(".json")
    if not card and beside.is_file():
        try:
            card = json.loads(beside.read_text())
        except (OSError, ValueError):
            card = {}
    if card.get("sources_seen") is not None:
        return list(card["sources_seen"])
    if config is None and not weights.exported:
        from dldl.checkpoint import load_checkpoint

        config = load_checkpoint(weights.path).get("config")
    config = config or {}
    seen = (config.get("extra") or {}).get("sources_seen")
    if seen is None and config:
        seen = sorted({s["dataset"] for s in config.get("sources") or []} or {config.get("dataset")} - {None})
    return list(seen) if seen else None


def combine(models: list[str | os.PathLike]) -> dict[str, Any]:
    """One checkpoint payload (for :func:`~dldl.checkpoint.save_checkpoint`) holding the ensemble
    (:mod:`dldl.models.ensemble`) of ``models``: checkpoints, run folders or shipped names, each
    used with its EMA weights when it has them and at its own temperature.

    The members must agree on everything a model's input and read-out depend on (label set,
    objective, task, crop template, input and crop sizes), and their objective must predict a
    softmax distribution. The ensemble runs with flip TTA only if every member does; its temperature
    is 1 (fit one with :func:`dldl.release.calibrate`); its training config, used to find the
    validation splits, is the first member's that has one.

    Raises:
        DldlError: naming the member that does not fit, and how.
    """
    import torch

    from dldl.checkpoint import model_weights
    from dldl.losses import get_objective
    from dldl.models.ensemble import SEPARATOR

    if len(models) < 2:
        raise DldlError(f"an ensemble needs at least two models, got {len(models)}")
    specs, states, configs = [], [], []
    for m in models:
        weights, ck = checkpoint(m)
        spec = ModelSpec.from_payload(ck, weights.path)
        if spec.architecture == "ensemble":
            raise DldlError(f"{m}: is an ensemble already; give its members instead")
        if not get_objective(spec.objective).softmax_over_labels:
            raise DldlError(f"{m}: objective {spec.objective!r} has no softmax distribution to average")
        specs.append(spec)
        states.append(model_weights(ck))
        configs.append(ck.get("config"))
    first = specs[0]
    same = ("labels", "objective", "task", "template", "input_size", "cache_size", "eval_crop", "mean", "std")
    for m, spec in zip(models[1:], specs[1:]):
        for name in same:
            if getattr(spec, name) != getattr(first, name):
                raise DldlError(f"{m}: {name} {getattr(spec, name)!r} differs from {models[0]}'s {getattr(first, name)!r}; "
                                "ensemble members must agree on it")
    ranges = [s.label_range for s in specs if s.label_range is not None]
    spec = first.replace(architecture="ensemble", model_kwargs={"members": SEPARATOR.join(s.architecture for s in specs)},
                         temperature=1.0, tta_flip=all(s.tta_flip for s in specs),
                         label_range=(min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None)
    state = {f"members.{i}.{k}": v.float() if v.is_floating_point() else v for i, s in enumerate(states) for k, v in s.items()}
    state["temperatures"] = torch.tensor([s.temperature for s in specs], dtype=torch.float32)
    payload: dict[str, Any] = {"spec": spec.to_dict(), "state_dict": state, "ema_state_dict": None, "epoch": None,
                               "members": [os.fspath(m) for m in models]}
    config = next((c for c in configs if c is not None), None)
    if config is not None:
        payload["config"] = config
    return payload


def install(checkpoint_path: str | os.PathLike, name: str, card: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Ship a model: a compact fp16 copy of the checkpoint's model (EMA weights if present) as
    ``<out_dir>/<name>.pt`` and its card, with the file's sha256 and size, as ``<name>.json``
    (``out_dir``: the package's models folder). Both are written atomically."""
    from dldl.checkpoint import load_checkpoint, model_weights, save_checkpoint

    out_dir = MODELS_DIR if out_dir is None else Path(out_dir)
    ck = load_checkpoint(checkpoint_path)
    state = model_weights(ck)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    spec = ModelSpec.from_payload(ck, checkpoint_path).to_dict()
    path = save_checkpoint(out_dir / f"{name}.pt", {"spec": spec, "epoch": ck.get("epoch"), "state_dict": half,
                                                    "ema_state_dict": None})
    card = {**card, "name": name, "spec": spec, "sha256": file_sha256(path), "bytes": path.stat().st_size}
    _write_graph(name, out_dir, card)
    return path


def install_graph(name: str, out_dir: Path | None = None) -> Path:
    """Ship the ONNX graph of installed model ``name`` beside its checkpoint (:func:`install` does
    this for a new one) and record it in its card, so that the model predicts without torch."""
    out_dir = MODELS_DIR if out_dir is None else Path(out_dir)
    return _write_graph(name, out_dir, json.loads((out_dir / f"{name}.json").read_text()))


def _write_graph(name: str, out_dir: Path, card: dict[str, Any]) -> Path:
    """``<name>.onnx`` from ``<name>.pt`` (the weights stored as float16: :func:`dldl.export.export`
    with ``half_weights``), then ``card`` with its ``onnx`` entry (sha256, size) as ``<name>.json``."""
    from dldl.export import export

    estimator = Estimator.from_checkpoint(out_dir / f"{name}.pt", spec=ModelSpec.from_dict(card["spec"]))
    graph = export(estimator, out_dir / f"{name}.onnx", "onnx", half_weights=True)
    card = {**card, "onnx": {"file": graph.name, "sha256": file_sha256(graph), "bytes": graph.stat().st_size}}
    files.write_atomic(out_dir / f"{name}.json", Path.write_text, json.dumps(card, indent=1) + "\n")
    return graph
