"""Models shipped inside the package, loaded by name and offline.

Each shipped model is ``assets/models/<name>.pt`` (a weights-only checkpoint, fp16) beside
``<name>.json``: its model card (data, split, metrics, licence terms) and the file's ``sha256``,
which is checked before loading, so a damaged or swapped file is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.errors import CheckpointError, DldlError
from dldl.predict import Estimator

MODELS_DIR = Path(__file__).parent / "assets" / "models"


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


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> Estimator:
    """A ready :class:`~dldl.predict.Estimator` from a shipped model name or a checkpoint path.

    >>> load("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: no-such-model: neither a file nor a shipped model ...
    """
    path = Path(name_or_path)
    if path.suffix in (".pt", ".pth") or path.exists():
        return Estimator.from_checkpoint(path, device)
    if str(name_or_path) not in list_pretrained():
        known = ", ".join(list_pretrained()) or "none shipped yet"
        raise DldlError(f"{name_or_path}: neither a file nor a shipped model (shipped: {known})")
    card = model_card(str(name_or_path))
    weights = MODELS_DIR / f"{name_or_path}.pt"
    if sha256(weights) != card.get("sha256"):
        raise CheckpointError(weights, "sha256 does not match its model card; the file is damaged or was replaced")
    return Estimator.from_checkpoint(weights, device)


def export_shipped(checkpoint: str | Path, name: str, card: dict[str, Any], out_dir: Path = MODELS_DIR) -> Path:
    """Write a compact fp16 copy of ``checkpoint``'s model (EMA weights if present) and its card."""
    ck = load_checkpoint(checkpoint)
    state = ck.get("ema_state_dict") or ck["state_dict"]
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    keep = {k: ck[k] for k in ("model", "labels", "loss", "task", "input_size", "cache_size", "epoch") if k in ck}
    path = save_checkpoint(out_dir / f"{name}.pt", {**keep, "state_dict": half, "ema_state_dict": None})
    (out_dir / f"{name}.json").write_text(json.dumps({**card, "name": name, "sha256": sha256(path),
                                                      "bytes": path.stat().st_size}, indent=1) + "\n")
    return path
