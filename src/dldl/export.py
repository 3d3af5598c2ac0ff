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
:class:`~dldl.runtime.Estimator`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dldl.errors import DldlError
from dldl.files import atomic_path
from dldl.lazy import lazy_import
from dldl.runtime import Estimator, OnnxNetwork

torch = lazy_import("torch")  # for writing files and for TorchScript; running an ONNX file needs none

FORMATS = ("onnx", "torchscript")
ONNX_OUTPUTS = ("estimate", "distribution")
"""The outputs of an exported ONNX graph (``distribution`` only for objectives that have one)."""


def export(est: Estimator, path: str | Path, fmt: str = "onnx", half_weights: bool = False) -> Path:
    """Write ``est``'s network to ``path`` as ``fmt`` (``"onnx"`` or ``"torchscript"``), atomically.
    ``est`` must run in torch (not be an ONNX graph already). ``half_weights`` (ONNX): store the
    weights as float16 (:func:`half_initializers`; half the file, for a shipped model whose weights
    are float16 already), unfolded (batch norms are not folded into the convolutions by the
    exporter, which would give float32 weights; ONNX Runtime folds them when it loads the graph)."""
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
                                  opset_version=17, dynamo=False, do_constant_folding=not half_weights)
                proto = onnx.load(str(tmp))
                entry = proto.metadata_props.add()
                entry.key, entry.value = "dldl", json.dumps({"spec": est.spec.to_dict(), "outputs": names})
                onnx.save(half_initializers(proto) if half_weights else proto, str(tmp))
            else:
                meta = json.dumps({"spec": est.spec.to_dict(), "outputs": ["logits"]})
                torch.jit.trace(model, example).save(str(tmp), _extra_files={"dldl.json": meta})
    finally:
        est.model.to(est.device)
    return out


def half_initializers(proto: Any, min_size: int = 16) -> Any:
    """``proto`` (an ``onnx.ModelProto``) with each float32 weight of at least ``min_size`` values
    stored as float16 and cast back to float32 by a ``Cast`` node at the start of the graph. ONNX
    Runtime folds those casts into float32 constants when it loads the graph, so it runs as before;
    the file is about half the size. Lossless for weights that were float16 to begin with (the
    shipped checkpoints).

    >>> import onnx
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> w = numpy_helper.from_array(np.arange(32, dtype=np.float32).reshape(4, 8), "w")
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
    ...                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])
    >>> half = half_initializers(helper.make_model(g))
    >>> [(i.name, i.data_type) for i in half.graph.initializer], [n.op_type for n in half.graph.node]
    ([('w.fp16', 10)], ['Cast', 'MatMul'])
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    kept, casts = [], []
    for init in out.graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}.fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=f"{init.name}.cast"))
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(casts + nodes)
    return out
