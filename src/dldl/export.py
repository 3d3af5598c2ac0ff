"""Export a trained model to ONNX or TorchScript, and run an exported file.

- **ONNX**: the graph is the network *with its read-out* (:class:`~dldl.models.readout.ReadOut`):
  a normalised float batch ``(N, 3, S, S)`` (``S`` = the model's input size; see
  :func:`dldl.data.preprocess.eval_transform`) maps to ``estimate`` ``(N,)`` and, for objectives
  with one, ``distribution`` ``(N, K)``, at the temperature of the spec. ONNX Runtime runs it with
  numpy alone: ``dldl predict`` never imports torch.
- **TorchScript**: the bare network, ``(N, 3, S, S)`` -> logits ``(N, outputs)``; torch applies the
  read-out when it runs it.

The batch size is dynamic. Everything else needed is the model's
:class:`~dldl.models.spec.ModelSpec`, stored in the file itself: ONNX ``metadata_props["dldl"]`` /
TorchScript extra file ``dldl.json``, as ``{"spec": spec.to_dict(), "outputs": [...]}``. So an
exported file is self-contained: ``dldl.load("model.onnx")`` gives a ready
:class:`~dldl.inference.Estimator`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dldl.checkpoint import atomic_path
from dldl.errors import CheckpointError, DldlError, first_line
from dldl.inference import Estimator
from dldl.lazy import lazy_import
from dldl.models.spec import ModelSpec

torch = lazy_import("torch")  # for writing files and for TorchScript; running an ONNX file needs none

FORMATS = ("onnx", "torchscript")
ONNX_OUTPUTS = ("estimate", "distribution")
"""The outputs of an exported ONNX graph (``distribution`` only for objectives that have one)."""


def export(est: Estimator, path: str | Path, fmt: str = "onnx") -> Path:
    """Write ``est``'s network to ``path`` as ``fmt`` (``"onnx"`` or ``"torchscript"``), atomically.
    ``est`` must run in torch (not be an ONNX graph already)."""
    from dldl.models.readout import ReadOut

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(path)
    if out.is_dir():
        raise DldlError(f"{out}: is a folder; give the file to write (e.g. {out / 'model'}.{fmt})")
    if isinstance(est.model, OnnxNetwork):
        raise DldlError("this model is an ONNX graph already; export its checkpoint or shipped name instead")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = est.model.to("cpu").eval()
    example = torch.zeros(2, 3, est.input_size, est.input_size)
    try:
        with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about the input-shape checks
            if fmt == "onnx":
                import onnx

                names = list(ONNX_OUTPUTS[:1 if est.objective.distribution is None else 2])
                # the TorchScript-based exporter: seconds, where the torch.export one takes minutes here
                torch.onnx.export(ReadOut(model, est.spec).eval(), (example,), str(tmp), input_names=["images"],
                                  output_names=names, dynamic_axes={k: {0: "batch"} for k in ["images", *names]},
                                  opset_version=17, dynamo=False)
                proto = onnx.load(str(tmp))
                entry = proto.metadata_props.add()
                entry.key, entry.value = "dldl", json.dumps({"spec": est.spec.to_dict(), "outputs": names})
                onnx.save(proto, str(tmp))
            else:
                meta = json.dumps({"spec": est.spec.to_dict(), "outputs": ["logits"]})
                torch.jit.trace(model, example).save(str(tmp), _extra_files={"dldl.json": meta})
    finally:
        est.model.to(est.device)
    return out


class OnnxNetwork:
    """An exported ONNX graph in an ONNX Runtime session (no torch): normalised float32
    ``(N, 3, S, S)`` -> ``(estimate (N,), distribution (N, K) or None)``, as numpy.

    Raises:
        CheckpointError: ``path`` is not a dldl ONNX export, was written by an older dldl (a graph
            of logits), or its metadata does not describe its graph.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        # no spin-waiting between calls: a photo's few faces leave the threads idle most of the time,
        # and spinning burnt CPU (and slowed the detector beside it) for no gain
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            meta = json.loads(dict(self.session.get_modelmeta().custom_metadata_map)["dldl"])
        except Exception as e:  # onnxruntime raises many types for a bad file
            raise CheckpointError(self.path, f"not a dldl export ({first_line(e)[:200]})") from None
        self.spec = ModelSpec.from_payload(meta, self.path)
        self.outputs = [o.name for o in self.session.get_outputs()]
        if self.outputs[:1] != ["estimate"]:
            raise CheckpointError(self.path, f"its graph outputs {', '.join(self.outputs)}: an export of an older dldl; "
                                             "export the model again (dldl export)")

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.session.run(None, {"images": np.ascontiguousarray(x, dtype=np.float32)})
        return out[0], out[1] if len(out) > 1 else None


def load_exported(path: str | Path, threads: int | None = None) -> Estimator:
    """An :class:`Estimator` running an exported ``.onnx`` (ONNX Runtime) or TorchScript file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "model file not found")
    if p.suffix == ".onnx":
        net: Any = OnnxNetwork(p, threads)
        spec = net.spec
    else:
        try:
            extra = {"dldl.json": ""}
            net = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
            spec = ModelSpec.from_payload(json.loads(extra["dldl.json"]), p)
            with torch.no_grad():
                width = tuple(net(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape)
        except CheckpointError:
            raise
        except Exception as e:  # jit raises many types for a bad file
            raise CheckpointError(p, f"not a dldl export ({first_line(e)[:200]})") from None
        if width != (1, spec.num_outputs):
            raise CheckpointError(p, f"its graph outputs {width[1:]} values per image, but its metadata "
                                     f"({spec.objective} over {spec.labels.num_labels} labels) needs {spec.num_outputs}")
    estimator = Estimator(net, spec)
    _check_graph(estimator, p)
    return estimator


def _check_graph(est: Estimator, path: Path) -> None:
    """Refuse a file whose metadata does not describe its graph (a relabelled objective or label
    set, another input size): one crop must give one estimate and, where the objective has one,
    a distribution over the spec's labels."""
    spec = est.spec
    try:
        out = est.predict_arrays(np.zeros((1, spec.cache_size, spec.cache_size, 3), np.uint8), tta_flip=False)
    except Exception as e:  # noqa: BLE001 -- the runtimes raise many types for a graph of another input
        raise CheckpointError(path, f"its graph does not take the {spec.input_size}x{spec.input_size} input its metadata "
                                    f"states ({first_line(e)[:160]})") from None
    k = spec.labels.num_labels
    wants = None if est.objective.distribution is None else (1, k)
    got = None if out.distribution is None else tuple(out.distribution.shape)
    if out.estimate.shape != (1,) or got != wants:
        gives = "no distribution" if got is None else f"a distribution over {got[-1]} labels"
        needs = "none" if wants is None else f"one over {k} labels"
        raise CheckpointError(path, f"its graph gives {gives} per image, but its metadata ({spec.objective} over {k} "
                                    f"labels) needs {needs}")
