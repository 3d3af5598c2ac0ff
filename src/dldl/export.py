"""Export a trained model to ONNX or TorchScript, and run an exported ONNX model.

The exported graph maps a normalised float batch ``(N, 3, S, S)`` (``S`` = the model's input size)
to logits ``(N, outputs)``; the batch size is dynamic. Everything needed to turn logits into
estimates is the model's :class:`~dldl.models.spec.ModelSpec`, stored in the file itself: ONNX
``metadata_props["dldl"]`` / TorchScript extra file ``dldl.json``, as ``{"spec": spec.to_dict()}``. So an exported file is
self-contained: ``dldl.load("model.onnx")`` gives a ready :class:`~dldl.inference.Estimator`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dldl.checkpoint import atomic_path
from dldl.errors import CheckpointError, DldlError, first_line
from dldl.inference import Estimator
from dldl.models.spec import ModelSpec

FORMATS = ("onnx", "torchscript")


def _example(est: Estimator) -> Tensor:
    return torch.zeros(2, 3, est.input_size, est.input_size)


def export(est: Estimator, path: str | Path, fmt: str = "onnx") -> Path:
    """Write ``est``'s network to ``path`` as ``fmt`` (``"onnx"`` or ``"torchscript"``), atomically."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(path)
    if out.is_dir():
        raise DldlError(f"{out}: is a folder; give the file to write (e.g. {out / 'model'}.{fmt})")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = est.model.to("cpu").eval()
    meta = json.dumps({"spec": est.spec.to_dict()})
    try:
        with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about the input-shape checks
            if fmt == "onnx":
                import onnx

                # the TorchScript-based exporter: seconds, where the torch.export one takes minutes here
                torch.onnx.export(model, (_example(est),), str(tmp), input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                                  dynamo=False)
                proto = onnx.load(str(tmp))
                entry = proto.metadata_props.add()
                entry.key, entry.value = "dldl", meta
                onnx.save(proto, str(tmp))
            else:
                torch.jit.trace(model, _example(est)).save(str(tmp), _extra_files={"dldl.json": meta})
    finally:
        est.model.to(est.device)
    return out


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session behaving like the network: ``(N, 3, S, S)`` float -> ``(N, K)`` logits."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # no spin-waiting between calls: a photo's few faces leave the threads idle most of the time,
        # and spinning burnt CPU (and slowed the detector beside it) for no gain
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {"images": np.ascontiguousarray(x.detach().cpu().float().numpy())})[0]
        return torch.from_numpy(out).to(x.device)


def load_exported(path: str | Path, threads: int | None = None) -> Estimator:
    """An :class:`Estimator` running an exported ``.onnx`` (ONNX Runtime) or TorchScript file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "model file not found")
    try:
        if p.suffix == ".onnx":
            net: nn.Module = OnnxNetwork(p, threads)
            meta = json.loads(dict(net.session.get_modelmeta().custom_metadata_map)["dldl"])
        else:
            extra = {"dldl.json": ""}
            net = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
            meta = json.loads(extra["dldl.json"])
        spec = ModelSpec.from_payload(meta, p)
    except CheckpointError:
        raise
    except Exception as e:  # onnxruntime / jit raise many types for a bad file
        raise CheckpointError(p, f"not a dldl export ({first_line(e)[:200]})") from None
    _check_graph(net, spec, p)
    return Estimator(net, spec)


def _check_graph(net: nn.Module, spec: ModelSpec, path: Path) -> None:
    """Refuse a file whose metadata does not describe its graph (a relabelled objective or label
    set, another input size): one zero batch must map ``(1, 3, S, S)`` to ``(1, spec.num_outputs)``."""
    try:
        with torch.no_grad():
            shape = tuple(net(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape)
    except Exception as e:  # noqa: BLE001 -- the runtimes raise many types for a graph of another input
        raise CheckpointError(path, f"its graph does not take the {spec.input_size}x{spec.input_size} input its metadata "
                                    f"states ({first_line(e)[:160]})") from None
    if shape != (1, spec.num_outputs):
        raise CheckpointError(path, f"its graph outputs {shape[1:] if len(shape) > 1 else shape} values per image, but its "
                                    f"metadata ({spec.objective} over {spec.labels.num_labels} labels) needs {spec.num_outputs}")
