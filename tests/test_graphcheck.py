"""A user-supplied ONNX graph may allocate only what a dldl export would: crafted files are
refused before ONNX Runtime sees them (``dldl.graphcheck``), and every real export passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dldl.errors import CheckpointError  # noqa: E402
from dldl.graphcheck import ALLOWED_OPS, check_graph  # noqa: E402
from dldl.labels import LabelSet  # noqa: E402
from dldl.models.spec import ModelSpec  # noqa: E402
from dldl.runtime import load_exported  # noqa: E402

SIDE = 64


def _graph_file(path: Path, nodes: list, initializers: list | None = None, side: int = SIDE,
                opset: int = 17, domains: tuple[str, ...] = ()) -> Path:
    """An ONNX file of ``nodes`` that reads ``images`` (batch, 3, side, side) and gives ``estimate``
    (batch,), with valid dldl metadata (an ``l1`` model: one estimate per image), so only its graph is wrong."""
    graph = helper.make_graph(nodes, "crafted", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, side, side])],
                              [helper.make_tensor_value_info("estimate", TensorProto.FLOAT, ["batch"])], initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)])
    spec = ModelSpec("tiny_age_net", LabelSet(0, 100, 1), "l1", side)
    entry = model.metadata_props.add()
    entry.key, entry.value = "dldl", json.dumps({"spec": spec.to_dict(), "outputs": ["estimate"]})
    onnx.save(model, str(path))
    return path


def _mean_of(name: str, out: str = "estimate") -> list:
    """Nodes reducing an image batch ``name`` (batch, ...) to one value per image, times a scalar ``s``."""
    return [helper.make_node("ReduceMean", [name], ["m"], axes=[1, 2, 3], keepdims=0), helper.make_node("Mul", ["m", "s"], [out])]


def _constant_of_shape_bomb(path: Path) -> Path:
    """292 bytes of graph: a 40000 x 40000 float constant (6.4 GB), averaged into the estimate."""
    shape = numpy_helper.from_array(np.array([40000, 40000], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceMean", ["big"], ["s"], keepdims=0), *_mean_of("images")]
    return _graph_file(path, nodes, [shape])


def test_a_crafted_constant_of_shape_is_refused_before_anything_is_allocated(tmp_path):
    """The 1 KB file that took 6.6 GB of RSS (and 27 s) to load is refused in one line, its process
    staying under 400 MB; the check runs in a child process so its peak memory can be read alone."""
    bomb = _constant_of_shape_bomb(tmp_path / "bomb.onnx")
    assert bomb.stat().st_size < 1024
    code = ("import sys\nfrom dldl.runtime import load_exported\nfrom dldl.errors import CheckpointError\n"
            "try:\n    load_exported(sys.argv[1])\nexcept CheckpointError as e:\n    print(e)\nelse:\n    print('loaded')\n"
            # the child's own high-water mark: VmHWM starts afresh at exec, where ru_maxrss keeps the forked parent's
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "print(int(hwm[0].split()[1]) // 1024 if hwm else -1, file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.monotonic()
    child = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, env=env, timeout=300)
    out, err = child.stdout, child.stderr
    seconds, peak_mb = time.monotonic() - start, int(err.strip().splitlines()[-1])
    assert out.strip() == (f"{bomb}: refused as a model graph: tensor 'big' would take 6,400,000,000 bytes (40000x40000), "
                           f"more than 16,777,216 for a {bomb.stat().st_size}-byte file"), (out, err[-500:])
    assert peak_mb < 400 and seconds < 60, (peak_mb, seconds)  # it took 27 s and 6.6 GB; time is loose for a loaded machine


def _conv_weight(name: str = "w") -> object:
    return numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), name)


CRAFTED = {
    # an operator no export has (control flow, custom domains)
    "loop_operator": (lambda: [helper.make_node("Loop", ["n", ""], ["o"]), *_mean_of("images")], [],
                      "operator Loop is not one a dldl export uses"),
    "custom_domain": (lambda: [helper.make_node("Evil", ["images"], ["x"], domain="com.evil"), *_mean_of("x")], [],
                      "operator com.evil.Evil is not one a dldl export uses"),
    # a convolution padded by 40000 on each side: 25 GB per image
    "conv_padding": (lambda: [helper.make_node("Conv", ["images", "w"], ["x"], pads=[40000] * 4), *_mean_of("x")], [_conv_weight()],
                     "tensor 'x' would take 25,640,976,384 bytes per image (1x1x80064x80064), above the limit of 6,291,456 for a 64x64 input"),
    # two 160 KB initializers broadcast into 40000 x 40000
    "broadcast": (lambda: [helper.make_node("Mul", ["a", "b"], ["big"]), helper.make_node("ReduceMean", ["big"], ["s0"], keepdims=0),
                           helper.make_node("Identity", ["s0"], ["s"]), *_mean_of("images")],
                  [numpy_helper.from_array(np.ones((40000, 1), np.float32), "a"), numpy_helper.from_array(np.ones((1, 40000), np.float32), "b")],
                  "tensor 'big' would take 6,400,000,000 bytes (40000x40000)"),
    # memory that grows with the square of the batch: (N, k) x (k, N)
    "batch_squared": (lambda: [helper.make_node("Flatten", ["images"], ["f"]), helper.make_node("Transpose", ["f"], ["t"], perm=[1, 0]),
                               helper.make_node("MatMul", ["f", "t"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["estimate"], axes=[1], keepdims=0)],
                      [], "tensor 'sq' grows with the batch in another way than one row per image (1x1 for 1 image, 2x2 for 2)"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_graphs_are_refused_in_one_line(tmp_path, case):
    nodes, inits, problem = CRAFTED[case]
    built = nodes()
    if case == "loop_operator":  # whatever follows, the operator alone is refused
        inits = [numpy_helper.from_array(np.array(1, np.int64), "n")]
    if not any("s" in n.output for n in built):
        built.insert(0, helper.make_node("Constant", [], ["s"], value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])))
    path = _graph_file(tmp_path / f"{case}.onnx", built, inits, domains=("com.evil",) if case == "custom_domain" else ())
    start = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        load_exported(path)
    message = str(e.value)
    assert message.startswith(f"{path}: refused as a model graph: ") and problem in message and "\n" not in message, message
    assert time.monotonic() - start < 5


def test_weights_in_an_external_file_are_refused(tmp_path):
    """External data would let a graph read another file beside it as its weights (ONNX Runtime
    itself refuses only paths that leave the model's folder)."""
    nodes = [helper.make_node("Conv", ["images", "w"], ["x"]), helper.make_node("Constant", [], ["s"],
             value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])), *_mean_of("x")]
    path = _graph_file(tmp_path / "external.onnx", nodes, [_conv_weight()])
    model = onnx.load(str(path))
    onnx.external_data_helper.convert_model_to_external_data(model, location="private.bin", size_threshold=0)
    (tmp_path / "private.bin").write_bytes(b"any file's first bytes")
    model.graph.initializer[0].ClearField("raw_data")
    onnx.save(model, str(path), save_as_external_data=False)
    with pytest.raises(CheckpointError, match="refused as a model graph: its weight 'w' is kept in an external file"):
        load_exported(path)


EXPORTS = [("tiny_age_net", "dldl_v2", {}, 1.0), ("tiny_age_net", "l1", {"hybrid_pool": False}, 1.3),
           ("thin_age_net", "softmax", {}, 0.7), ("vgg16_bn", "expectation_l1", {}, 1.0), ("mobilenet_v2", "dldl_v2", {}, 1.0),
           ("efficientnet_lite0", "dldl", {}, 1.0), ("dlib_resnet29", "dldl_v2", {}, 1.0),
           ("ensemble", "dldl_v2", {"members": "tiny_age_net,mobilenet_v2"}, 0.8)]


@pytest.mark.parametrize("architecture, objective, options, temperature", EXPORTS, ids=[f"{a}-{o}" for a, o, *_ in EXPORTS])
def test_every_kind_of_dldl_export_passes_the_check(tmp_path, architecture, objective, options, temperature):
    """Every architecture, each read-out kind (distribution, regression, temperature): its export
    uses only ALLOWED_OPS and loads (the ranking objective has no ONNX export: aten::cummin)."""
    from dldl.export import export
    from dldl.runtime import Estimator

    side = 128 if architecture == "dlib_resnet29" else 32
    spec = ModelSpec(architecture, LabelSet(0, 100, 1), objective, side, model_kwargs=options, temperature=temperature)
    path = export(Estimator(spec.create_model(), spec), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
    check_graph(model, path, path.stat().st_size)
    assert load_exported(path).spec == spec
