"""Model cost and CPU inference speed of ThinAgeNet, TinyAgeNet and the VGG16-BN baseline, side by side.

1. cost: parameters, forward FLOPs per image at each input size, weight-file sizes (fp32, fp16,
   ONNX, int8).
2. speed: latency at batch 1 and throughput at batch 32 for each model x backend x thread count,
   medians over repeats. Backends: ``eager`` (NCHW), ``channels_last``, ``compile`` (torch.compile,
   inductor, channels_last), ``onnxruntime`` (the graph ``dldl export --format onnx`` writes: the
   network and its read-out, softmax and expectation),
   ``int8-torch`` (x86 static quantisation: conv+BN+ReLU fused, per-channel int8 weights, uint8
   activations; head in fp32) and ``int8-onnxruntime`` (ONNX Runtime static QDQ quantisation,
   per-channel). The speed rows use randomly initialised networks (speed does not depend on the
   weights); int8 calibration for them uses random inputs.
3. face -> age: the shipped age model end to end on one aligned crop (uint8 crop -> centre crop
   and resize -> network -> expected age), batch 1, per runtime, with and without flip TTA.
4. accuracy: the shipped age model's MAE on UTKFace ``coral_test`` for each runtime; int8 models
   are calibrated on 256 faces of ``coral_train``.

    python benchmarks/inference.py --json docs/bench/inference.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import torch
from torch import Tensor, nn

import dldl
from dldl.data.cache import load_cached
from dldl.data.images import load_face
from dldl.data.datasets import load_dataset
from dldl.data.preprocess import eval_transform
from dldl.runtime import OnnxNetwork, load_exported
from dldl.export import export
from dldl.labels import LabelSet
from dldl.metrics import mae
from dldl.models.vgg import AgeNet
from dldl.models.spec import ModelSpec
from dldl.runtime import Estimator

MODELS = ("thin_age_net", "tiny_age_net", "vgg16_bn")
BACKENDS = ("eager", "channels_last", "compile", "onnxruntime", "int8-torch", "int8-onnxruntime")
RUNTIMES = ("torch", "onnxruntime", "int8-torch", "int8-onnxruntime")  # for the shipped model
AGE_MODEL = "tiny_age_net-utkface"
SAMPLES_DIR = Path(dldl.__file__).parent / "assets" / "samples"


# --------------------------------------------------------------------------- int8


class _QuantAgeNet(nn.Module):
    """An :class:`AgeNet` between quantise / dequantise stubs: int8 features and pooling, fp32 head.
    ``(N, 3, S, S)`` float -> ``(N, K)`` float logits."""

    def __init__(self, net: AgeNet) -> None:
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.features, self.pool, self.head = net.features, net.pool, net.head

    def forward(self, x: Tensor) -> Tensor:
        x = self.dequant(self.pool(self.features(self.quant(x))))
        return self.head(torch.flatten(x, 1))


def quantize_torch(model: nn.Module, calibration: Tensor) -> nn.Module:
    """Static int8 copy of an :class:`AgeNet` for the x86 backend (fbgemm/oneDNN), calibrated on
    ``calibration`` ``(N, 3, S, S)`` normalised float images."""
    if not isinstance(model, AgeNet):
        raise TypeError(f"int8-torch handles AgeNet models only, got {type(model).__name__}")
    torch.backends.quantized.engine = "x86"
    qnet = _QuantAgeNet(copy.deepcopy(model).float().eval()).eval()
    layers = list(qnet.features)
    groups = [[str(i), str(i + 1)] + ([str(i + 2)] if i + 2 < len(layers) and isinstance(layers[i + 2], nn.ReLU) else [])
              for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notes
        torch.ao.quantization.fuse_modules(qnet.features, groups, inplace=True)
        qnet.qconfig = torch.ao.quantization.get_default_qconfig("x86")
        qnet.head.qconfig = None
        torch.ao.quantization.prepare(qnet, inplace=True)
        with torch.no_grad():
            for chunk in calibration.split(64):
                qnet(chunk)
        torch.ao.quantization.convert(qnet, inplace=True)
    return qnet


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: Tensor) -> Path:
    """ONNX Runtime static QDQ int8 (per-channel int8 weights, uint8 activations) of an exported
    model, calibrated on ``calibration`` ``(N, 3, S, S)``; keeps the file's dldl metadata."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": c.numpy()} for c in calibration.split(32)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    # the network's layers only: the read-out (softmax, expectation) at the end of the graph stays float
    quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "Gemm", "MaxPool", "GlobalAveragePool", "Relu", "Add"])
    pre.unlink()
    return out_path


# --------------------------------------------------------------------------- cost


def _bytes_of(state: dict[str, Tensor]) -> int:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


@dataclasses.dataclass
class Artifacts:
    """One architecture at one input size, in every form the backends need."""

    name: str
    size: int
    estimator: Estimator  # random weights
    onnx: Path
    onnx_int8: Path
    torch_int8: nn.Module | None
    int8_note: str | None


def build(name: str, size: int, workdir: Path, calibration: int = 8) -> Artifacts:
    """Random-weight model, its ONNX export and both int8 versions (calibrated on ``calibration``
    random images: speed does not depend on the calibration, and ONNX Runtime's calibrator holds
    every intermediate tensor of the calibration batch in memory)."""
    spec = ModelSpec(name, LabelSet(0, 100, 1), "dldl_v2", size)
    est = Estimator(spec.create_model().eval(), spec)
    calib = torch.randn(calibration, 3, size, size, generator=torch.Generator().manual_seed(0))
    onnx_path = export(est, workdir / f"{name}-{size}.onnx", "onnx")
    onnx_int8 = quantize_onnx(onnx_path, workdir / f"{name}-{size}-int8.onnx", calib)
    try:
        qt, note = quantize_torch(est.model, calib), None
    except Exception as e:  # noqa: BLE001 - recorded as the row's reason
        qt, note = None, f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return Artifacts(name, size, est, onnx_path, onnx_int8, qt, note)


def cost_row(art: Artifacts, sizes: list[int]) -> dict[str, Any]:
    model = art.estimator.model
    state = model.state_dict()
    return {"model": art.name, "params": benchlib.parameter_count(model),
            "forward_gflops": {str(s): round(benchlib.forward_flops(model, s) / 1e9, 4) for s in sizes},
            "bytes_fp32": _bytes_of(state),
            "bytes_fp16": _bytes_of({k: v.half() if v.is_floating_point() else v for k, v in state.items()}),
            "bytes_onnx": art.onnx.stat().st_size, "bytes_onnx_int8": art.onnx_int8.stat().st_size,
            "bytes_torch_int8": _bytes_of(art.torch_int8.state_dict()) if art.torch_int8 is not None else None}


# --------------------------------------------------------------------------- speed


def runner(art: Artifacts, backend: str, threads: int, compiled: dict | None) -> tuple[Callable[[Tensor], Any], bool] | str:
    """``(fn, channels_last)`` running ``backend`` on a float batch, or an ``"n/a: reason"`` string.
    ``compiled``: the :func:`compile_model` entry for this batch size (``compile`` backend only)."""
    model = art.estimator.model
    if backend == "eager":
        return model, False
    if backend == "channels_last":
        return copy.deepcopy(model).to(memory_format=torch.channels_last), True
    if backend == "compile":
        return (compiled["model"], True) if compiled and "model" in compiled else (compiled or {}).get("error", "n/a")
    if backend == "onnxruntime":
        return _numpy_call(OnnxNetwork(art.onnx, threads)), False
    if backend == "int8-torch":
        return (art.torch_int8, True) if art.torch_int8 is not None else (art.int8_note or "n/a")
    if backend == "int8-onnxruntime":
        return _numpy_call(OnnxNetwork(art.onnx_int8, threads)), False
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def _numpy_call(net: OnnxNetwork) -> Callable[[Tensor], Any]:
    """An ONNX graph (network and read-out, numpy in and out) called on a torch batch."""
    return lambda x: net(x.numpy())


def compile_model(art: Artifacts, batch: int, enabled: bool) -> dict[str, Any]:
    """``{"model", "compile_s"}``: torch.compile (inductor, ``dynamic=False``) of the channels_last
    model, compiled by one call at ``batch``; ``{"error": "n/a: ..."}`` when skipped or failed."""
    if not enabled:
        return {"error": "n/a: not compiled at this size (see --compile-sizes)"}
    model = copy.deepcopy(art.estimator.model).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, art.size, art.size).contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    try:
        fn = torch.compile(model, dynamic=False)
        with torch.no_grad():
            fn(x)
    except Exception as e:  # noqa: BLE001 - compile needs a C++ toolchain; record why it failed
        return {"error": f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"}
    return {"model": fn, "compile_s": round(time.perf_counter() - t0, 1)}


def speed_rows(art: Artifacts, backends: list[str], threads_list: list[int], batches: list[int], compile_ok: bool,
               reps: int, budget_s: float) -> list[dict[str, Any]]:
    """One row per backend x thread count x batch: median ms per call and images/s (or ``na``)."""
    rows = []
    compiled: dict[int, dict[str, Any]] = {}  # batch -> compile_model entry, reused across thread counts
    for threads in threads_list:
        torch.set_num_threads(threads)
        for backend in backends:
            for batch in batches:
                row = {"model": art.name, "size": art.size, "backend": backend, "threads": threads, "batch": batch}
                rows.append(row)
                if backend == "compile" and batch not in compiled:
                    compiled[batch] = compile_model(art, batch, compile_ok)
                got = runner(art, backend, threads, compiled.get(batch))
                if isinstance(got, str):
                    row["na"] = got
                    continue
                fn, channels_last = got
                x = torch.randn(batch, 3, art.size, art.size)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad():
                    t = benchlib.timed(lambda fn=fn, x=x: fn(x), warmup=1, min_reps=min(3, reps), max_reps=reps, budget_s=budget_s)
                row.update(median_ms=round(t["median_s"] * 1e3, 3), reps=t["reps"], images_per_s=round(batch / t["median_s"], 1))
                if backend == "compile":
                    row["compile_s"] = compiled[batch]["compile_s"]
    return rows


# --------------------------------------------------------------------------- the shipped age model


def shipped_runtimes(threads: int, calibration: Tensor, workdir: Path) -> dict[str, Estimator]:
    """The shipped age model as an :class:`Estimator` per runtime (ONNX sessions use ``threads``)."""
    est = dldl.load(AGE_MODEL)
    fp32 = workdir / f"{AGE_MODEL}.onnx"
    int8 = workdir / f"{AGE_MODEL}-int8.onnx"
    if not fp32.exists():
        export(est, fp32, "onnx")
        quantize_onnx(fp32, int8, calibration)
    q = quantize_torch(est.model, calibration)
    return {"torch": est, "onnxruntime": load_exported(fp32, threads),
            "int8-torch": Estimator(q, est.spec),
            "int8-onnxruntime": load_exported(int8, threads)}


def face_to_age_rows(threads_list: list[int], calibration: Tensor, workdir: Path, reps: int) -> list[dict[str, Any]]:
    """Latency of one aligned crop -> age (eval transform, network, expectation), per runtime."""
    crop = load_face(sorted(SAMPLES_DIR.glob("*.jpg"))[0], dldl.load(AGE_MODEL).cache_size)[None]
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for runtime, est in shipped_runtimes(threads, calibration, workdir).items():
            for tta in (True, False):
                call = lambda est=est, tta=tta: est.predict_arrays(crop, tta_flip=tta)  # noqa: E731
                t = benchlib.timed(call, warmup=2, min_reps=min(3, reps), max_reps=reps, budget_s=2.0)
                rows.append({"runtime": runtime, "tta_flip": tta, "threads": threads, "median_ms": round(t["median_s"] * 1e3, 3),
                             "reps": t["reps"]})
    return rows


def accuracy_rows(root: Path, split: str, limit: int | None, calibration: Tensor, workdir: Path, cache_dir: str | None,
                  threads: int) -> list[dict[str, Any]]:
    """MAE (flip TTA) of the shipped age model on ``split`` for each runtime, and its change vs torch fp32."""
    torch.set_num_threads(threads)
    samples = load_dataset("utkface", root, split)
    if limit:
        samples = dataclasses.replace(samples, samples=samples.samples[:limit])
    truth = np.array([s.label for s in samples.samples])
    runtimes = shipped_runtimes(threads, calibration, workdir)
    images = load_cached(samples, runtimes["torch"].cache_size, cache_dir, workers=1)
    rows = []
    for runtime, est in runtimes.items():
        t0 = time.perf_counter()
        pred = est.predict_arrays(images, tta_flip=True)
        rows.append({"runtime": runtime, "split": split, "faces": len(samples), "mae": round(mae(pred.estimate, truth), 4),
                     "seconds": round(time.perf_counter() - t0, 1)})
    for r in rows:
        r["mae_change"] = round(r["mae"] - rows[0]["mae"], 4)
    return rows


def calibration_images(root: Path | None, count: int) -> Tensor:
    """``(count, 3, S, S)`` normalised crops for int8 calibration of the shipped model: faces spread
    over UTKFace ``coral_train`` when available, else the bundled sample crops."""
    est = dldl.load(AGE_MODEL)
    if root is not None and root.exists():
        train = load_dataset("utkface", root, "coral_train").samples
        paths = [s.path for s in train[:: max(1, len(train) // count)][:count]]
    else:
        paths = sorted(SAMPLES_DIR.glob("*.jpg"))
    return torch.from_numpy(eval_transform(np.stack([load_face(p, est.cache_size) for p in paths]), est.input_size))


# --------------------------------------------------------------------------- run + report


def run(models: Sequence[str] = MODELS, sizes: Sequence[int] = (64, 224), threads: Sequence[int] = (2, 1),
        batches: Sequence[int] = (1, 32), backends: Sequence[str] = BACKENDS, compile_sizes: Sequence[int] = (64,),
        reps: int = 20, budget_s: float = 4.0, root: Path | None = benchlib.SHARED_DATA / "utkface",
        limit: int | None = None, calibration: int = 256, cache_dir: str | None = None) -> dict[str, Any]:
    """Every measurement of this script; ``root=None`` (or a missing folder) skips the accuracy rows."""
    start = torch.get_num_threads()
    models, sizes, threads, batches, backends = list(models), list(sizes), list(threads), list(batches), list(backends)
    out: dict[str, Any] = {"machine": benchlib.machine(), "settings": {
        "models": models, "sizes": sizes, "threads": threads, "batches": batches, "backends": backends,
        "compile_sizes": list(compile_sizes), "max_reps": reps, "budget_s": budget_s, "limit": limit}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out["cost"], out["speed"] = [], []
        for name in models:
            for size in sizes:
                art = build(name, size, work)
                if size == sizes[0]:
                    out["cost"].append(cost_row(art, sizes))
                out["speed"] += speed_rows(art, backends, threads, batches, size in compile_sizes, reps, budget_s)
                print(f"inference: {name} {size} px done", flush=True)
        calib = calibration_images(root, calibration)
        out["face_to_age"] = face_to_age_rows(threads, calib, work, reps)
        if root is not None and root.exists():
            out["accuracy"] = accuracy_rows(root, "coral_test", limit, calib, work, cache_dir, max(threads))
        else:
            out["accuracy"] = [{"na": f"n/a: UTKFace not found at {root}"}]
    torch.set_num_threads(start)
    return out


def _speed(rows: list[dict], **key: Any) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in key.items())), None)


def _speedup(baseline: dict, row: dict | None) -> float | None:
    return round(baseline["median_ms"] / row["median_ms"], 2) if row and "median_ms" in row else None


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Speed-ups of ThinAgeNet and TinyAgeNet over VGG16-BN (VGG16 time / model time), per setting."""
    rows = []
    for r in result["speed"]:
        if r["model"] != "vgg16_bn" or "median_ms" not in r:
            continue
        key = {k: r[k] for k in ("size", "backend", "threads", "batch")}
        thin, tiny = _speed(result["speed"], model="thin_age_net", **key), _speed(result["speed"], model="tiny_age_net", **key)
        rows.append({**key, "thin_vs_vgg16": _speedup(r, thin), "tiny_vs_vgg16": _speedup(r, tiny)})
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The report section of this script's results."""
    s = result["settings"]
    parts = ["### Model cost\n", "Forward GFLOPs per image as counted by `torch.utils.flop_counter` (2 x multiply-adds of "
             "convolutions and the head); weight sizes of the serialized state dict / file.\n"]
    sizes = [str(v) for v in s["sizes"]]
    parts.append(benchlib.md_table(
        ["model", "parameters"] + [f"GFLOPs @{v} px" for v in sizes] + ["fp32 MB", "fp16 MB", "ONNX MB", "int8 ONNX MB", "int8 torch MB"],
        [[c["model"], f"{c['params']:,}"] + [f"{c['forward_gflops'][v]:.3f}" for v in sizes]
         + [benchlib.fmt(c[k] / 1e6 if c[k] else None, 2) for k in ("bytes_fp32", "bytes_fp16", "bytes_onnx", "bytes_onnx_int8", "bytes_torch_int8")]
         for c in result["cost"]]))
    speed = result["speed"]
    for size in s["sizes"]:
        header = ["model", "backend"]
        cols = [(b, t) for b in s["batches"] for t in s["threads"]]
        header += [f"batch {b}: {'ms' if b == 1 else 'img/s'}, {t} thr" for b, t in cols]
        rows = []
        for name in s["models"]:
            for backend in s["backends"]:
                cells = []
                for b, t in cols:
                    r = _speed(speed, model=name, size=size, backend=backend, threads=t, batch=b)
                    cells.append(None if r is None or "median_ms" not in r else r["median_ms"] if b == 1 else r["images_per_s"])
                rows.append([name, backend] + cells)
        parts += [f"\n### Inference at {size} px\n", "Batch 1: median latency in ms; other batches: images/s "
                  "(median). `n/a`: see the JSON for the reason (e.g. compile not run at this size).\n",
                  benchlib.md_table(header, rows)]
        notes = [r for r in speed if r["size"] == size and "compile_s" in r and r["threads"] == s["threads"][0]]
        if notes:
            parts.append("\ntorch.compile time (first call): " + ", ".join(f"{r['model']} batch {r['batch']}: {r['compile_s']} s" for r in notes))
    rat = ratios(result)
    if rat:
        parts += ["\n### Speed-up over VGG16-BN (VGG16 time / model time; paper, M40 GPU: ThinAgeNet 2.6x, TinyAgeNet 5.5x)\n",
                  benchlib.md_table(["input", "backend", "threads", "batch", "ThinAgeNet", "TinyAgeNet"],
                                    [[f"{r['size']} px", r["backend"], r["threads"], r["batch"], r["thin_vs_vgg16"], r["tiny_vs_vgg16"]]
                                     for r in rat])]
    parts += [f"\n### A face -> age, shipped `{AGE_MODEL}` (one aligned crop, batch 1; target <= 10 ms on 1 thread)\n",
              benchlib.md_table(["runtime", "flip TTA", "threads", "median ms", "<= 10 ms"],
                                [[r["runtime"], "yes" if r["tta_flip"] else "no", r["threads"], r["median_ms"],
                                  ("pass" if r["median_ms"] <= 10 else "fail") if r["threads"] == 1 else ""]
                                 for r in result["face_to_age"]])]
    acc = result["accuracy"]
    if acc and "na" not in acc[0]:
        parts += [f"\n### Accuracy per runtime, shipped `{AGE_MODEL}`, UTKFace {acc[0]['split']} ({acc[0]['faces']} faces, flip TTA)\n",
                  benchlib.md_table(["runtime", "MAE", "change vs torch fp32"], [[r["runtime"], r["mae"], f"{r['mae_change']:+.4f}"] for r in acc])]
    else:
        parts.append(f"\nAccuracy per runtime: {acc[0]['na'] if acc else 'not measured'}")
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--compile-sizes", nargs="*", type=int, default=[64], help="input sizes at which to run torch.compile")
    ap.add_argument("--reps", type=int, default=20, help="at most this many timed repeats per cell (at least 3)")
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of timed repeats per cell after the first 3")
    ap.add_argument("--root", type=Path, default=benchlib.SHARED_DATA / "utkface", help="UTKFace folder (accuracy rows)")
    ap.add_argument("--limit", type=int, default=None, help="first N faces of coral_test for the accuracy rows")
    ap.add_argument("--cache-dir", default=None, help="decoded-image cache folder (default ~/.cache/dldl)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args()
    result = run(args.models, args.sizes, args.threads, args.batches, args.backends, args.compile_sizes, args.reps, args.budget,
                 args.root, args.limit, cache_dir=args.cache_dir)
    benchlib.finish(result, args.json, markdown)


if __name__ == "__main__":
    main()
