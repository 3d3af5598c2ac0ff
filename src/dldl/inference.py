"""Prediction from face crops: :class:`Estimator` wraps a trained network with its label set,
objective and input geometry, and turns uint8 face crops into estimates and label distributions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dldl.data.images import load_face
from dldl.data.preprocess import EVAL_CROP, MEAN, STD, eval_transform
from dldl.errors import CheckpointError, DataError, DldlError, first_line
from dldl.labels import LabelSet, quantile
from dldl.losses import get_objective
from dldl.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch


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
        meta: free-form facts about the run (metrics, config, epoch).
        device: where an ``nn.Module`` runs (an ONNX graph runs on the CPU).
    """

    def __init__(self, model: Any, spec: ModelSpec, meta: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> None:
        from dldl.export import OnnxNetwork

        if (tuple(spec.mean), tuple(spec.std)) != (MEAN, STD) or spec.eval_crop != EVAL_CROP:
            raise DldlError(f"model spec asks for normalisation {spec.mean}/{spec.std} and eval crop "
                            f"{spec.eval_crop}; this dldl feeds {MEAN}/{STD} and {EVAL_CROP}")
        self.spec = spec
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
        from dldl.checkpoint import load_checkpoint, model_weights

        ck = load_checkpoint(path)
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


@dataclass
class FacePrediction:
    """One face found in a photo: where it is and what the model estimates.

    ``box`` is ``(x0, y0, x1, y1)`` and ``landmarks`` ``(5, 2)`` in photo pixels (``None`` for a
    given crop); ``value`` the estimate (age in years or beauty score), ``interval`` its 5-95%
    interval from the predicted distribution, ``distribution`` the ``(K,)`` distribution.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    score: float | None
    value: float
    interval: tuple[float, float] | None
    distribution: np.ndarray | None
    crop: np.ndarray
    flags: tuple[str, ...] = ()
    percentile: float | None = None  # of ``value`` among the model's estimates on its training faces

    def to_dict(self, task: str) -> dict[str, Any]:
        out = {"box": [round(v, 1) for v in self.box],
               "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist(),
               "score": None if self.score is None else round(self.score, 3), task: round(self.value, 3),
               "interval_90": None if self.interval is None else [round(v, 3) for v in self.interval],
               "flags": list(self.flags)}
        if self.percentile is not None:
            out["percentile"] = round(self.percentile, 1)
        return out


def percentile_of(value: float, quantiles: np.ndarray | list[float]) -> float:
    """Where ``value`` falls among a reference set summarised by its ``(101,)`` quantiles (those of
    0, 1, ..., 100 %): 0-100, linear between quantiles, clipped at the ends.

    >>> percentile_of(5.0, np.linspace(0.0, 10.0, 101))
    50.0
    >>> percentile_of(-3.0, np.linspace(0.0, 10.0, 101)), percentile_of(99.0, np.linspace(0.0, 10.0, 101))
    (0.0, 100.0)
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if q.shape != (101,) or bool(np.any(np.diff(q) < 0)):
        raise ValueError(f"quantiles must be 101 non-decreasing values (0..100 %), got shape {q.shape}")
    return float(np.interp(value, q, np.arange(101.0)))


LOW_SCORE = 0.85
"""A face kept by the detector but scored below this is flagged ``low_score`` (real faces in the
bundled and MEBeauty photos score 0.8-0.95; an earring-and-background crop scored 0.81)."""
SMALL_FACE = 40.0
"""A face box narrower than this (photo pixels) is flagged ``small_face``: its crop is upscaled
from too few pixels to show age."""
FLAT_WIDTH = 0.35
"""A 90% interval wider than this share of the label range is flagged ``flat_distribution``."""

FLAGS = {
    "low_score": f"the detector scored the face below {LOW_SCORE}: it may not be a face",
    "small_face": f"the face is under {SMALL_FACE:g} px wide: too few pixels to judge",
    "flat_distribution": f"the 90% interval spans over {FLAT_WIDTH:.0%} of the label range: the model is unsure",
    "two_peaks": "the distribution has two separate peaks: two readings are about equally likely",
    "outside_training_range": "the estimate lies outside the labels the model was trained on",
}
"""Why an estimate is not to be trusted: ``dldl predict``'s ``note`` column and JSON ``flags``."""


def two_peaks(p: np.ndarray, ratio: float = 0.4) -> bool:
    """Whether ``(K,)`` distribution ``p`` has two separate modes: after a short box smoothing, a
    second local maximum at least ``ratio`` times the highest, with a valley between them below
    60% of the lower peak.

    >>> x = np.arange(100.0)
    >>> bump = lambda m: np.exp(-0.5 * ((x - m) / 4) ** 2)
    >>> two_peaks(bump(20) + bump(70)), two_peaks(bump(40)), two_peaks(bump(40) + bump(48))
    (True, False, False)
    """
    if p.ndim != 1:
        raise ValueError(f"p must be (K,), got shape {p.shape}")
    k = max(3, len(p) // 40) | 1
    s = np.convolve(p, np.ones(k) / k, mode="same")
    peaks = [i for i in range(1, len(s) - 1) if s[i] >= s[i - 1] and s[i] > s[i + 1]]
    if len(peaks) < 2:
        return False
    first = max(peaks, key=lambda i: s[i])
    for i in sorted(peaks, key=lambda i: -s[i]):
        if i != first and s[i] >= ratio * s[first]:
            lo, hi = sorted((i, first))
            if s[lo:hi + 1].min() < 0.6 * s[i]:
                return True
    return False


def face_flags(face: FacePrediction, spec: ModelSpec) -> tuple[str, ...]:
    """The :data:`FLAGS` that apply to ``face`` as estimated by a model of ``spec``."""
    flags = []
    if face.score is not None and face.score < LOW_SCORE:
        flags.append("low_score")
    if face.landmarks is not None and face.box[2] - face.box[0] < SMALL_FACE:
        flags.append("small_face")
    span = spec.labels.stop - spec.labels.start
    if face.interval is not None and span > 0 and face.interval[1] - face.interval[0] > FLAT_WIDTH * span:
        flags.append("flat_distribution")
    if face.distribution is not None and two_peaks(face.distribution):
        flags.append("two_peaks")
    low, high = spec.label_range or (spec.labels.start, spec.labels.stop)
    if not low - 1 <= face.value <= high + 1:
        flags.append("outside_training_range")
    return tuple(flags)


MIN_CROP_SIDE = 20  # a given face crop smaller than this is refused (the detector's smallest face, min_size)


@dataclass
class PhotoResult:
    """What ``dldl predict --json`` and ``POST /v1/predict`` report for one photo: its faces
    (largest first), or the one-line ``error`` that stopped it."""

    path: str
    faces: list[FacePrediction]
    task: str
    model: str
    labels: LabelSet | None = None
    error: str | None = None
    model_version: str | None = None

    def to_dict(self, distribution: bool = False) -> dict[str, Any]:
        """JSON-ready: ``{"path", "task", "model", "model_version", "scale", "faces", "error"}``; each
        face as :meth:`FacePrediction.to_dict` after its number ``"face"`` (from 1), with
        ``"distribution": {"labels", "probs"}`` when asked. ``scale`` is the model's label range
        ``[low, high]`` (years for age; the raters' scale for beauty).
        ``model_version`` is the first 12 hex digits of the model file's sha256."""
        values = None if self.labels is None else [round(v, 4) for v in self.labels.values().tolist()]
        faces = []
        for number, face in enumerate(self.faces, 1):  # numbered from 1, as in the table, the CSV and the pictures
            d = {"face": number, **face.to_dict(self.task)}
            if distribution:
                d["distribution"] = None if face.distribution is None or values is None else {
                    "labels": values, "probs": np.round(face.distribution, 5).tolist()}
            faces.append(d)
        scale = None if self.labels is None else [round(self.labels.start, 4), round(self.labels.stop, 4)]
        return {"path": self.path, "task": self.task, "model": self.model, "model_version": self.model_version,
                "scale": scale, "faces": faces, "error": self.error}


class Predictor:
    """Photo -> faces -> estimates: detect faces, align each to the model's crop template, predict.

    Args:
        estimator: a loaded model (``dldl.load(...)``).
        detector: a face detector (``dldl.faces.get_detector()``); ``None`` treats every input as an
            already aligned face crop.
        template: the alignment template; default: the model's own (``estimator.template``, from
            its spec), i.e. the geometry of the crops it was trained on.
        tta_flip: average over the crop and its mirror image; ``None``: the model's own setting
            (its spec's ``tta_flip``).
    """

    def __init__(self, estimator: Estimator, detector: Any | None = None, template: str | None = None,
                 tta_flip: bool | None = None) -> None:
        self.estimator = estimator
        self.detector = detector
        self.template = template or estimator.template
        self.tta_flip = tta_flip

    def predict(self, image: np.ndarray) -> list[FacePrediction]:
        """``(H, W, 3)`` uint8 RGB photo (or crop) -> one :class:`FacePrediction` per face, largest first.

        Raises:
            DataError: (without a file name) a crop, when there is no detector, smaller than
                :data:`MIN_CROP_SIDE` on a side.
        """
        from PIL import Image

        from dldl.data.images import square_resize
        from dldl.faces import aligned_crops

        size = self.estimator.cache_size
        if self.detector is None:
            h, w = image.shape[:2]
            if min(h, w) < MIN_CROP_SIDE:
                raise DataError(None, f"image is {w}x{h} pixels, too small for a face crop "
                                      f"(at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE})")
            found = [(None, square_resize(Image.fromarray(image), size), (0.0, 0.0, float(w), float(h)))]
        else:
            found = [(face, crop, face.box) for face, crop in aligned_crops(image, self.detector, self.template, size)]
        if not found:
            return []
        pred = self.estimator.predict_arrays(np.stack([c for _, c, _ in found]), self.tta_flip)
        intervals = pred.interval()
        faces = [FacePrediction(box, None if face is None else face.landmarks, None if face is None else face.score,
                                float(pred.estimate[i]), None if intervals is None else tuple(map(float, intervals[i])),
                                None if pred.distribution is None else pred.distribution[i], crop)
                 for i, (face, crop, box) in enumerate(found)]
        reference = self.estimator.meta.get("reference_quantiles")
        return [dataclasses.replace(f, flags=face_flags(f, self.estimator.spec),
                                    percentile=None if reference is None else percentile_of(f.value, reference))
                for f in faces]

    def result(self, image: np.ndarray, path: str, model: str) -> PhotoResult:
        """:meth:`predict` on ``image`` as the :class:`PhotoResult` of ``path``."""
        return PhotoResult(path, self.predict(image), self.estimator.task, model, self.estimator.labels,
                           model_version=self.estimator.version)


_PREDICTORS: dict[tuple, Predictor] = {}


def predict(images: Any, task: str = "age", model: str | None = None, distribution: bool = False, bgr: bool = False,
            min_score: float = 0.7, min_face_size: float = 20.0, tta: bool | None = None, device: str = "cpu"
            ) -> dict[str, Any] | list[dict[str, Any]]:
    """Every face in a photo, in one call: ``dldl.predict("party.jpg")``.

    Args:
        images: a path, a ``PIL.Image``, an ``(H, W, 3)`` uint8 array (RGB, or BGR as OpenCV gives
            with ``bgr=True``), or a list of them.
        task: ``"age"`` or ``"beauty"``: picks the shipped model (``model`` overrides it).
        model: a shipped model name, a checkpoint or an exported file.
        distribution: add each face's ``{"labels", "probs"}``.
        min_score, min_face_size: the detector keeps faces scored at least ``min_score`` and at
            least ``min_face_size`` px wide.
        tta: flip test-time augmentation; default: the model's own setting (its spec's ``tta_flip``).

    Returns:
        what ``dldl predict --json`` gives for each photo: ``{"path", "task", "model",
        "model_version", "faces", "error"}``, each face with ``box``, ``landmarks``, ``score``,
        the estimate under the task's name, ``interval_90`` and ``flags``; a list for a list.
        The model and the detector are loaded once and kept for later calls.

    Raises:
        DataError: a path that cannot be read (one line naming it); ValueError: an array that is
        not ``(H, W, 3)`` uint8.
    """
    from dldl.data.images import read_image
    from dldl.faces import get_detector
    from dldl.pretrained import DEFAULT_MODELS, load

    if isinstance(images, list):
        return [predict(x, task, model, distribution, bgr, min_score, min_face_size, tta, device) for x in images]
    if model is None:
        if task not in DEFAULT_MODELS:
            raise DldlError(f"unknown task {task!r}; use one of {', '.join(DEFAULT_MODELS)}")
        model = DEFAULT_MODELS[task]
    key = (str(model), device, min_score, min_face_size, tta)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = Predictor(load(model, device, "auto"), get_detector(min_score=min_score, min_size=min_face_size),
                                     tta_flip=tta)
    predictor = _PREDICTORS[key]
    path = None
    if isinstance(images, (str, Path)):
        path, array = str(images), np.asarray(read_image(images))
    elif hasattr(images, "convert") and hasattr(images, "size"):  # a PIL image
        from dldl.data.images import upright_rgb

        array = np.asarray(upright_rgb(images))
    else:
        array = np.asarray(images)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"an image array must be (H, W, 3) uint8, got {array.dtype} {array.shape}")
        if bgr:
            array = array[:, :, ::-1]
    return predictor.result(np.ascontiguousarray(array), path or "<image>", str(model)).to_dict(distribution)
