"""Bounds on what an ONNX graph given as a model may allocate, checked before ONNX Runtime sees it.

An ONNX file is a program: a 1 KB graph holding one ``ConstantOfShape`` of 40000 x 40000 made ONNX
Runtime allocate 6.6 GB while it created the session (it folds constants). :func:`check_graph`
reads the graph with ``onnx`` alone and refuses, in one line naming the file,

* a file over :data:`MAX_FILE_BYTES`, weights kept in external files, sparse initializers, local
  functions, or any operator outside :data:`ALLOWED_OPS` (the operators of dldl's own exports: a
  conv net and its read-out; no control flow, no custom domains);
* a graph whose input is not one ``(batch, 3, S, S)`` float image batch (S <= 1024);
* any tensor whose size cannot be worked out before running, or is too large: every node's output
  shape is inferred (``onnx.shape_inference``, one node at a time) for a batch of 1 and of 2 images,
  small shape arithmetic is computed on the way (at most :data:`FOLD_LIMIT` values, so nothing large
  is ever made); a tensor that grows with the batch must grow along one axis, twice as long for
  two images, and hold at most :data:`VALUES_PER_INPUT_VALUE` values per input value (and :data:`MAX_TENSOR_BYTES`)
  per image, and one that does not may hold at most four times the file's bytes (16 MiB at least).

dldl's networks stay far inside: the largest per-image tensor is VGG's first feature map, 21 values
per input value; their shape arithmetic (EfficientNet's and dlib's padding) is a few dozen values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dldl.errors import CheckpointError, first_line
from dldl.models.spec import MAX_INPUT_SIZE

if TYPE_CHECKING:
    import onnx

MAX_FILE_BYTES = 1 << 30
"""The largest ONNX file read (dldl's largest export, vgg16_bn, is 59 MB)."""
MAX_TENSOR_BYTES = 1 << 30
"""The most one tensor may hold for one image."""
VALUES_PER_INPUT_VALUE = 128
"""A tensor that grows with the batch holds at most this many values per value of the input image (3 S^2)."""
FOLD_LIMIT = 1 << 16
"""Shape arithmetic is computed (to know the next shapes) only on tensors of at most this many values."""
ALLOWED_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "DequantizeLinear", "QuantizeLinear", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Flatten", "Gather",
    "Gemm", "GlobalAveragePool", "Identity", "LogSoftmax", "MatMul", "MaxPool", "Mul", "Pad", "ReduceLogSumExp",
    "ReduceMean", "Relu", "Reshape", "Shape", "Slice", "Softmax", "Sub", "Transpose", "Unsqueeze",
})
"""The operators of dldl's ONNX exports: every architecture (ensembles too) with every exportable
objective, at any temperature, with batch norms folded or (``half_weights``, the shipped graphs) not,
and their ONNX Runtime int8 copies in QDQ form (``benchmarks/inference.py``)
(``tests/test_graphcheck.py`` exports them and checks this set)."""
DEFAULT_DOMAINS = ("", "ai.onnx")


def check_graph(model: onnx.ModelProto, path: str | Path, file_bytes: int) -> None:
    """Refuse ``model`` (read from ``path``, ``file_bytes`` long) unless it is a graph whose every
    tensor has a known, bounded size (see the module's docstring). Allocates nothing large.

    Raises:
        CheckpointError: one line naming ``path`` and what is wrong.
    """

    def refuse(problem: str) -> None:
        raise CheckpointError(path, f"refused as a model graph: {problem}")

    graph = model.graph
    if file_bytes > MAX_FILE_BYTES:
        refuse(f"the file is {file_bytes:,} bytes, above the limit of {MAX_FILE_BYTES:,}")
    if model.functions:
        refuse(f"it defines its own functions ({', '.join(f.name for f in model.functions)[:80]})")
    if graph.sparse_initializer:
        refuse("it holds sparse initializers")
    for tensor in graph.initializer:
        if tensor.data_location == tensor.EXTERNAL or tensor.external_data:
            refuse(f"its weight {tensor.name[:60]!r} is kept in an external file")
    for node in graph.node:
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in ALLOWED_OPS:
            where = f"{node.domain}." if node.domain not in DEFAULT_DOMAINS else ""
            refuse(f"operator {where}{node.op_type[:60]} is not one a dldl export uses (a conv net and its read-out)")
    side = _input_side(graph, refuse)
    static_cap = min(MAX_TENSOR_BYTES, max(4 * file_bytes, 16 << 20))
    image_cap = min(MAX_TENSOR_BYTES, VALUES_PER_INPUT_VALUE * 3 * side * side * 4)
    one, two = (_shapes(model, batch, side, refuse) for batch in (1, 2))
    for name, (shape, itemsize) in one.items():
        other = two[name][0]
        size = int(np.prod(shape, dtype=np.float64)) * itemsize
        if other == shape:
            if size > static_cap:
                refuse(f"tensor {name[:60]!r} would take {size:,} bytes ({_dims(shape)}), more than "
                       f"{static_cap:,} for a {file_bytes:,}-byte file")
        elif _one_axis_doubles(shape, other):
            if size > image_cap:
                refuse(f"tensor {name[:60]!r} would take {size:,} bytes per image ({_dims(shape)}), above the "
                       f"limit of {image_cap:,} for a {side}x{side} input")
        else:
            refuse(f"tensor {name[:60]!r} grows with the batch in another way than one row per image "
                   f"({_dims(shape)} for 1 image, {_dims(other)} for 2)")


def _one_axis_doubles(one: tuple[int, ...], two: tuple[int, ...]) -> bool:
    """Whether shape ``two`` (for 2 images) is ``one`` (for 1) with exactly one axis doubled: one
    tensor row (or block) per image, as a batch axis or an ensemble's stacked members give."""
    changed = [(a, b) for a, b in zip(one, two) if a != b]
    return len(one) == len(two) and len(changed) == 1 and changed[0][1] == 2 * changed[0][0]


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def _input_side(graph: Any, refuse: Any) -> int:
    """The side ``S`` of the graph's one input, a ``(batch, 3, S, S)`` float batch."""
    from onnx import TensorProto

    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        refuse(f"it takes {len(inputs)} inputs; a dldl export takes one batch of images")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.elem_type != TensorProto.FLOAT or len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or dims[2] is None:
        refuse("its input is not a (batch, 3, S, S) float batch of images")
    if not 1 <= dims[2] <= MAX_INPUT_SIZE:
        refuse(f"its input side {dims[2]} is outside 1-{MAX_INPUT_SIZE}")
    return dims[2]


def _shapes(model: onnx.ModelProto, batch: int, side: int, refuse: Any) -> dict[str, tuple[tuple[int, ...], int]]:
    """Every tensor's shape and item size for ``batch`` images, inferred node by node; values of at
    most :data:`FOLD_LIMIT` elements computable before running (shape arithmetic) are computed too."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    version = version_of(model)
    types: dict[str, onnx.TypeProto] = {}
    values: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[tuple[int, ...], int]] = {}
    for tensor in graph.initializer:
        types[tensor.name] = helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
        if int(np.prod(tensor.dims, dtype=np.float64)) <= FOLD_LIMIT:
            values[tensor.name] = numpy_helper.to_array(tensor)
    image = next(i for i in graph.input if i.name not in types)
    types[image.name] = helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [batch, 3, side, side])
    for node in graph.node:
        missing = [i for i in node.input if i and i not in types]
        if missing:
            refuse(f"node {node.name[:60]!r} reads {missing[0][:60]!r}, which nothing before it makes")
        try:
            schema = onnx.defs.get_schema(node.op_type, version, node.domain)
            data = {i: numpy_helper.from_array(values[i], i) for i in node.input if i in values}
            out = shape_inference.infer_node_outputs(schema, node, {i: types[i] for i in node.input if i}, data,
                                                     opset_imports=list(model.opset_import), ir_version=model.ir_version)
        except Exception as e:  # noqa: BLE001 -- onnx raises several types for a node it cannot type
            refuse(f"the shapes of node {node.name[:60]!r} ({node.op_type}) cannot be worked out ({first_line(e)[:120]})")
        for name in node.output:
            kind = out.get(name)
            dims = kind.tensor_type.shape.dim if kind is not None and kind.HasField("tensor_type") else None
            if dims is None or not kind.tensor_type.HasField("shape") or not all(d.HasField("dim_value") for d in dims):
                refuse(f"the size of tensor {name[:60]!r} ({node.op_type}) cannot be worked out before running it")
            shape = tuple(d.dim_value for d in dims)
            itemsize = max(1, helper.tensor_dtype_to_np_dtype(kind.tensor_type.elem_type).itemsize)
            types[name], shapes[name] = kind, (shape, itemsize)
        small = all(np.prod(shapes[o][0], dtype=np.float64) <= FOLD_LIMIT for o in node.output)
        if node.op_type == "Shape" and small:
            values[node.output[0]] = _shape_value(node, shapes, types)
        elif small and all(not i or i in values for i in node.input):
            try:
                results = ReferenceEvaluator(node).run(None, {i: values[i] for i in node.input if i})
            except Exception as e:  # noqa: BLE001 -- as above
                refuse(f"node {node.name[:60]!r} ({node.op_type}) cannot be computed ({first_line(e)[:120]})")
            values.update({o: np.asarray(v) for o, v in zip(node.output, results)})
    return shapes


def _shape_value(node: Any, shapes: dict, types: dict) -> np.ndarray:
    """The value of a ``Shape`` node: its input's inferred shape, cut by the ``start``/``end`` attributes."""
    from onnx import helper

    name = node.input[0]
    dims = shapes[name][0] if name in shapes else tuple(d.dim_value for d in types[name].tensor_type.shape.dim)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return np.array(dims[slice(attrs.get("start", 0), attrs.get("end"))], dtype=np.int64)


def version_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the graph asks for (``ai.onnx`` when named so)."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)
