"""Device names (``--device``): checked once, with one clear line for a bad or absent device."""

from __future__ import annotations

import torch

from dldl.errors import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a torch device.

    Raises:
        ConfigError: an unknown name, or a CUDA device this machine does not have.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("nope")
    Traceback (most recent call last):
    ...
    dldl.errors.ConfigError: device 'nope': must be auto, cpu, cuda or cuda:N
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError("device", name, "auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError("device", name, "auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError("device", name, "cpu or auto: this machine has no usable CUDA device")
        if device.index is not None and device.index >= count:
            raise ConfigError("device", name, f"one of cuda:0..cuda:{count - 1} (this machine has {count})")
    return device
