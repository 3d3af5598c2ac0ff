"""Models shipped inside the package, loaded by name and offline.

Each shipped model is ``assets/models/<name>.pt`` (a weights-only checkpoint, fp16) beside
``<name>.json``: its model card (data, split, metrics, licence terms) and the file's ``sha256``,
which is checked before loading, so a damaged or swapped file is refused.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dldl.assets import MODELS_DIR
from dldl.checkpoint import atomic_path, file_sha256, load_checkpoint, model_weights, save_checkpoint
from dldl.errors import CheckpointError, DldlError, first_line
from dldl.inference import Estimator
from dldl.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch

DEFAULT_MODELS = {"age": "mobilenet_v2-age", "beauty": "mobilenet_v2-beauty"}
"""The model ``dldl predict`` and ``dldl serve`` use for each task."""


def list_pretrained() -> list[str]:
    """Names of the models shipped with this package (``[]`` if none)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json") if (MODELS_DIR / f"{p.stem}.pt").exists())


def model_card(name: str) -> dict[str, Any]:
    """The model card of a shipped model."""
    path = MODELS_DIR / f"{name}.json"
    if not path.exists():
        known = ", ".join(list_pretrained()) or "none shipped yet"
        raise DldlError(f"no shipped model called {name!r} (shipped: {known})")
    return json.loads(path.read_text())


RUNTIMES = ("torch", "onnx", "auto")


def resolve_weights(name_or_path: str | Path) -> Path:
    """The checkpoint file of a shipped model name, or ``name_or_path`` itself when it is a path
    (an existing file, or a name ending in ``.pt`` / ``.pth``, whose absence the reader reports).

    >>> resolve_weights("mobilenet_v2-beauty").name
    'mobilenet_v2-beauty.pt'
    >>> resolve_weights("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: no-such-model: neither a file nor a shipped model ...
    """
    path = Path(name_or_path)
    if path.suffix in (".pt", ".pth") or path.exists():
        return path
    if str(name_or_path) in list_pretrained():
        return MODELS_DIR / f"{name_or_path}.pt"
    known = ", ".join(list_pretrained()) or "none shipped yet"
    raise DldlError(f"{name_or_path}: neither a file nor a shipped model (shipped: {known})")


def load(name_or_path: str | Path, device: str | torch.device = "cpu", runtime: str = "torch",
         threads: int | None = None) -> Estimator:
    """A ready :class:`~dldl.inference.Estimator` from a shipped model name, a checkpoint path, or an
    exported ``.onnx`` / ``.torchscript`` file.

    ``runtime="onnx"`` runs a torch model through ONNX Runtime: it is exported once to
    ``<cache>/onnx/<sha256 of the weights>.onnx`` and reused while that file checks out (its
    recorded sha256, the same spec); otherwise it is exported again. ``"auto"`` (what
    ``dldl predict`` and ``dldl.predict`` use) is ONNX Runtime on the CPU, and torch on a GPU or
    when the export cannot be made or cached (a warning says why). ``threads``: ONNX Runtime's
    intra-op threads (default: one per core).

    >>> load("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: no-such-model: neither a file nor a shipped model ...
    """
    from dldl.export import load_exported

    if runtime not in RUNTIMES:
        raise DldlError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if device != "cpu":  # torch names the device (a bad --device is named as such, before any model file is read)
        from dldl.devices import resolve_device

        device = resolve_device(device)
    on_cpu = device == "cpu" or device.type == "cpu"
    auto = runtime == "auto"
    if auto:
        runtime = "onnx" if on_cpu else "torch"
    path = Path(name_or_path)
    if path.suffix in (".onnx", ".torchscript"):
        exported = load_exported(path, threads)
        exported.meta["sha256"] = file_sha256(path)
        return exported
    weights = resolve_weights(name_or_path)
    card = model_card(weights.stem) if weights.parent == MODELS_DIR else {}
    sha = file_sha256(weights) if weights.is_file() else ""
    if weights != path and sha != card.get("sha256"):  # a shipped model asked for by name
        raise CheckpointError(weights, "sha256 does not match its model card; the file is damaged or was replaced")
    card_spec = ModelSpec.from_dict(card["spec"]) if "spec" in card else None
    from dldl.data.cache import default_cache_dir

    onnx_path = default_cache_dir() / "onnx" / f"{sha}.onnx"
    if runtime == "onnx" and card_spec is not None:  # a shipped model exported before: no torch network to build
        cached = _cached_onnx(onnx_path, card_spec, threads)
        if cached is not None:
            cached.meta.update(_card_meta(card, sha))
            return cached
    estimator = Estimator.from_checkpoint(weights, device, card_spec)
    estimator.meta.update(_card_meta(card, sha))
    if runtime == "torch":
        return estimator
    try:
        onnx = _onnx_copy(estimator, onnx_path, threads)
    except (OSError, DldlError, RuntimeError) as e:
        if not auto:
            raise
        warnings.warn(f"running {name_or_path} with torch: its ONNX copy could not be made ({first_line(e)})", RuntimeWarning, stacklevel=2)
        return estimator
    onnx.meta.update(estimator.meta)
    return onnx


def _card_meta(card: dict[str, Any], sha: str) -> dict[str, Any]:
    """What an estimator carries from its file and card: the weights' sha256 (its version) and,
    for beauty models, the quantiles of its estimates on its training faces (for percentiles)."""
    meta: dict[str, Any] = {"sha256": sha}
    ref = card.get("reference_estimates")
    if ref:
        meta["reference_quantiles"] = ref["quantiles"]
    return meta


def _cached_onnx(path: Path, spec: ModelSpec, threads: int | None = None) -> Estimator | None:
    """The ONNX Runtime copy cached at ``path`` if its sha256 matches the record beside it and it
    describes the network of ``spec``; else ``None``."""
    from dldl.export import load_exported

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
    from dldl.export import export, load_exported

    cached = _cached_onnx(path, estimator.spec, threads)
    if cached is not None:
        return cached
    export(estimator, path, "onnx")
    with atomic_path(path.with_suffix(".sha256")) as tmp:
        tmp.write_text(file_sha256(path) + "\n")
    return load_exported(path, threads)


def export_shipped(checkpoint: str | Path, name: str, card: dict[str, Any], out_dir: Path = MODELS_DIR) -> Path:
    """Write a compact fp16 copy of ``checkpoint``'s model (EMA weights if present) and its card."""
    ck = load_checkpoint(checkpoint)
    state = model_weights(ck)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    spec = ModelSpec.from_payload(ck, checkpoint).to_dict()
    path = save_checkpoint(out_dir / f"{name}.pt", {"spec": spec, "epoch": ck.get("epoch"), "state_dict": half,
                                                    "ema_state_dict": None})
    (out_dir / f"{name}.json").write_text(json.dumps({**card, "name": name, "spec": spec, "sha256": file_sha256(path),
                                                      "bytes": path.stat().st_size}, indent=1) + "\n")
    return path
