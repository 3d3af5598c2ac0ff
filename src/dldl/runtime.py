"""The runtime: a trained network ready to predict, from uint8 face crops to estimates and
label distributions.

:class:`Estimator` wraps a network with its :class:`~dldl.models.spec.ModelSpec` (label set,
objective, input geometry) and its name. The network runs in one of two ways:

- :class:`OnnxNetwork`: an exported ONNX graph that holds the read-out itself, run by ONNX
  Runtime with numpy alone (what ``dldl predict`` uses on the CPU; no torch);
- an ``nn.Module`` in torch, followed by its objective's read-out.

Where weights come from (a shipped name, a checkpoint, a run folder) is :mod:`dldl.hub`'s job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dldl.data.images import load_face
from dldl.data.preprocess import EVAL_CROP, MEAN, STD, eval_transform
from dldl.errors import CheckpointError, DldlError, first_line
from dldl.labels import LabelSet, quantile
from dldl.lazy import lazy_import
from dldl.losses import get_objective
from dldl.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")  # for checkpoints and TorchScript; an ONNX graph runs without it


@dataclass
class Prediction:
    """Estimates for ``N`` faces: ``estimate`` ``(N,)`` and, for distribution-producing losses,
    ``distribution`` ``(N, K)`` over ``labels`` (else ``None``)."""

    estimate: np.ndarray
    distribution: np.ndarray | None
    labels: LabelSet

    def interval(self, low: float = 0.05, high: float = 0.95) -> np.ndarray | None:
        """``(N, 2)`` quantile interval of each predicted distribution (``None`` without one)."""
        if self.distribution is None:
            return None
        return np.stack([quantile(self.distribution, self.labels, low), quantile(self.distribution, self.labels, high)], 1)


class Estimator:
    """A trained model ready to predict: the network and its :class:`~dldl.models.spec.ModelSpec`.

    Crops become network inputs in numpy (:func:`~dldl.data.preprocess.eval_transform`); the
    network runs in one of two ways:

    - an ``nn.Module`` (``spec.create_model()`` with trained weights, or a TorchScript or quantised
      copy) runs in torch on ``device``, followed by its objective's read-out
      (:class:`~dldl.models.readout.ReadOut`);
    - a :class:`~dldl.export.OnnxNetwork` is an exported graph that holds the read-out itself (at
      the temperature of the spec it was exported with) and runs in ONNX Runtime, without torch.

    Args:
        model: the network, as above.
        spec: what the model needs: label set, objective, input and crop sizes, task, template.
        meta: free-form facts about the run (metrics, config, epoch; ``sha256`` of the weights file).
        device: where an ``nn.Module`` runs (an ONNX graph runs on the CPU).
        name: what the model was asked for by (a shipped name or a file path), as results report it.
    """

    def __init__(self, model: Any, spec: ModelSpec, meta: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", name: str | None = None) -> None:
        if (tuple(spec.mean), tuple(spec.std)) != (MEAN, STD) or spec.eval_crop != EVAL_CROP:
            raise DldlError(f"model spec asks for normalisation {spec.mean}/{spec.std} and eval crop "
                            f"{spec.eval_crop}; this dldl feeds {MEAN}/{STD} and {EVAL_CROP}")
        self.spec = spec
        self.name = name
        self.objective = get_objective(spec.objective)
        self.meta = meta or {}
        if isinstance(model, OnnxNetwork):
            if model.spec != spec:
                raise DldlError("an ONNX graph holds the read-out of the spec it was exported with; "
                                "export the model again to change its spec")
            self.model, self.device, self._read_out = model, "cpu", None
        else:
            from dldl.devices import resolve_device
            from dldl.models.readout import ReadOut

            self.device = resolve_device(device)
            self.model = model.eval().to(self.device)
            self._read_out = ReadOut(self.model, spec)

    labels = property(lambda self: self.spec.labels)
    input_size = property(lambda self: self.spec.input_size)
    cache_size = property(lambda self: self.spec.cache_size)
    task = property(lambda self: self.spec.task)
    template = property(lambda self: self.spec.template)
    version = property(lambda self: self.meta.get("sha256", "")[:12] or None)  # of the file it was loaded from

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", spec: ModelSpec | None = None
                        ) -> "Estimator":
        """Load a checkpoint written by ``dldl train`` (EMA weights when it has them). ``spec``
        (a model card's) replaces the file's own; it must describe the same network."""
        from dldl.checkpoint import load_checkpoint

        return cls.from_payload(load_checkpoint(path), path, device, spec)

    @classmethod
    def from_payload(cls, ck: dict[str, Any], path: str | Path = "the checkpoint", device: str | torch.device = "cpu",
                     spec: ModelSpec | None = None) -> "Estimator":
        """:meth:`from_checkpoint` for a checkpoint payload already in memory (a calibrated or
        combined model not written yet); ``path`` names it in errors."""
        from dldl.checkpoint import model_weights

        own = ModelSpec.from_payload(ck, path)
        if spec is not None and own.replace(label_range=None, temperature=1.0) != spec.replace(label_range=None, temperature=1.0):
            raise CheckpointError(path, "the model card's spec describes another network than the file's")
        spec = spec or own
        try:
            model = spec.create_model()
            model.load_state_dict(model_weights(ck))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(path, f"does not hold a usable dldl model ({first_line(e)})") from None
        return cls(model, spec, {k: ck[k] for k in ("metrics", "config", "epoch") if k in ck}, device)

    def predict_arrays(self, images: np.ndarray, tta_flip: bool | None = None, batch_size: int = 256) -> Prediction:
        """``(N, S, S, 3)`` uint8 face crops (S = ``cache_size`` ideally) -> :class:`Prediction`.

        With ``tta_flip`` (default: the spec's ``tta_flip``, on for most models) the outputs for the crop and its mirror image are averaged (probabilities
        for distribution losses, estimates for regression: every estimate is linear in the outputs
        it averages, E[p] for softmax losses and the soft count for ranking, so the mean estimate
        is the estimate of the mean distribution).
        """
        est, dist = self._views(images, self.spec.tta_flip if tta_flip is None else tta_flip, batch_size)
        return Prediction(est.mean(0), None if dist is None else dist.mean(0), self.labels)

    def predict_arrays_both(self, images: np.ndarray, batch_size: int = 256) -> tuple[Prediction, Prediction]:
        """``(with flip TTA, without)`` for ``(N, S, S, 3)`` uint8 crops, from one pass over both views
        (what ``dldl eval`` reports; equal to two :meth:`predict_arrays` calls)."""
        est, dist = self._views(images, True, batch_size)
        return (Prediction(est.mean(0), None if dist is None else dist.mean(0), self.labels),
                Prediction(est[0], None if dist is None else dist[0], self.labels))

    def _views(self, images: np.ndarray, tta_flip: bool, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(V, N)`` estimates and ``(V, N, K)`` distributions, view 0 the crop and (with
        ``tta_flip``) view 1 its mirror image, both views of a batch in one network call."""
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"images must be uint8 of shape (N, S, S, 3), got {got}")
        views = 2 if tta_flip else 1
        est, dist = [], []
        for i in range(0, len(images), batch_size):
            x = eval_transform(images[i:i + batch_size], self.input_size)
            if tta_flip:
                x = np.concatenate([x, x[..., ::-1]])
            e, d = self._network(np.ascontiguousarray(x))
            est.append(e.reshape(views, -1))
            if d is not None:
                dist.append(d.reshape(views, -1, d.shape[-1]))
        if not est:
            empty = np.zeros((views, 0, self.labels.num_labels), np.float32)
            return empty[..., 0], None if self.objective.distribution is None else empty
        return np.concatenate(est, 1), np.concatenate(dist, 1) if dist else None

    def _network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Normalised ``(N, 3, S, S)`` float32 -> ``(N,)`` estimates, ``(N, K)`` distributions."""
        if self._read_out is None:
            return self.model(x)
        return self._read_out.run(x, self.device)

    def predict_files(self, paths: list[str | Path], tta_flip: bool | None = None) -> Prediction:
        """Face-crop image files -> :class:`Prediction` (raises DataError naming a bad file)."""
        return self.predict_arrays(np.stack([load_face(p, self.cache_size) for p in paths]), tta_flip)


class OnnxNetwork:
    """An exported ONNX graph in an ONNX Runtime session (no torch): normalised float32
    ``(N, 3, S, S)`` -> ``(estimate (N,), distribution (N, K) or None)``, as numpy.

    The graph is read and checked with ``onnx`` first (:func:`dldl.graphcheck.check_graph`: known
    operators, every tensor of a known and bounded size), and the session is made from the bytes
    checked, so a crafted file cannot make ONNX Runtime allocate gigabytes while it loads. A graph
    given with ``sha256`` (a shipped model's, from its card) whose bytes hash to it skips the check.

    Raises:
        CheckpointError: ``path`` is not a dldl ONNX export, was written by an older dldl (a graph
            of logits), its graph is refused by the check above, or its metadata does not describe its graph.
    """

    def __init__(self, path: str | Path, threads: int | None = None, sha256: str | None = None) -> None:
        import onnxruntime as ort

        from dldl.graphcheck import MAX_FILE_BYTES

        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            if size > MAX_FILE_BYTES:  # not even read
                raise CheckpointError(self.path, f"refused as a model graph: the file is {size:,} bytes, above the "
                                                 f"limit of {MAX_FILE_BYTES:,}")
            data = self.path.read_bytes()
        except CheckpointError:
            raise
        except OSError as e:
            raise CheckpointError(self.path, f"not a dldl export ({first_line(e)[:200]})") from None
        if sha256 is None or hashlib.sha256(data).hexdigest() != sha256:
            self._check(data)  # a graph no model card vouches for (by the sha256 of these very bytes) is checked first
        opts = ort.SessionOptions()
        # no spin-waiting between calls: a photo's few faces leave the threads idle most of the time,
        # and spinning burnt CPU (and slowed the detector beside it) for no gain
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            meta = json.loads(dict(self.session.get_modelmeta().custom_metadata_map)["dldl"])
        except Exception as e:  # onnxruntime raises many types for a bad file
            raise CheckpointError(self.path, f"not a dldl export ({first_line(e)[:200]})") from None
        self.spec = ModelSpec.from_payload(meta, self.path)
        self.outputs = [o.name for o in self.session.get_outputs()]
        if self.outputs[:1] != ["estimate"]:
            raise CheckpointError(self.path, f"its graph outputs {', '.join(self.outputs)}: an export of an older dldl; "
                                             "export the model again (dldl export)")

    def _check(self, data: bytes) -> None:
        """:func:`dldl.graphcheck.check_graph` on the bytes about to be loaded (it imports ``onnx``,
        about a second of start-up, which a shipped graph vouched for by its card skips)."""
        import onnx

        from dldl.graphcheck import check_graph

        try:
            graph = onnx.ModelProto.FromString(data)
        except Exception as e:  # a damaged protobuf raises DecodeError
            raise CheckpointError(self.path, f"not a dldl export ({first_line(e)[:200]})") from None
        check_graph(graph, self.path, len(data))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.session.run(None, {"images": np.ascontiguousarray(x, dtype=np.float32)})
        return out[0], out[1] if len(out) > 1 else None


def load_exported(path: str | Path, threads: int | None = None, sha256: str | None = None) -> Estimator:
    """An :class:`Estimator` running an exported ``.onnx`` (ONNX Runtime) or TorchScript file;
    ``sha256``: what a model card says the ONNX file hashes to (:class:`OnnxNetwork`)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "model file not found")
    if p.suffix.lower() == ".onnx":
        net: Any = OnnxNetwork(p, threads, sha256)
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
