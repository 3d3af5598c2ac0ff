"""Prediction from face crops: :class:`Estimator` wraps a trained network with its label set,
objective and input geometry, and turns uint8 face crops into estimates and label distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dldl.checkpoint import load_checkpoint
from dldl.data.augment import EVAL_CROP, MEAN, STD, eval_transform
from dldl.data.images import load_face
from dldl.devices import resolve_device
from dldl.errors import CheckpointError, DataError, DldlError, first_line
from dldl.labels import LabelSet, quantile
from dldl.losses import get_objective
from dldl.models.spec import ModelSpec


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
        p = torch.from_numpy(self.distribution)
        return torch.stack([quantile(p, self.labels, low), quantile(p, self.labels, high)], 1).numpy()


class Estimator:
    """A trained model ready to predict: the network and its :class:`~dldl.models.spec.ModelSpec`.

    Args:
        model: the network (``spec.create_model()``) with trained weights, or any module with
            the same input and output (an ONNX Runtime session, a quantised copy).
        spec: what the model needs: label set, objective, input and crop sizes, task, template.
        meta: free-form facts about the run (metrics, config, epoch).
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, meta: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> None:
        if (tuple(spec.mean), tuple(spec.std)) != (MEAN, STD) or spec.eval_crop != EVAL_CROP:
            raise DldlError(f"model spec asks for normalisation {spec.mean}/{spec.std} and eval crop "
                            f"{spec.eval_crop}; this dldl feeds {MEAN}/{STD} and {EVAL_CROP}")
        self.model = model.eval()
        self.spec = spec
        self.objective = get_objective(spec.objective)
        self.meta = meta or {}
        self.device = resolve_device(device)
        self.model.to(self.device)

    labels = property(lambda self: self.spec.labels)
    input_size = property(lambda self: self.spec.input_size)
    cache_size = property(lambda self: self.spec.cache_size)
    task = property(lambda self: self.spec.task)
    template = property(lambda self: self.spec.template)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", spec: ModelSpec | None = None
                        ) -> "Estimator":
        """Load a checkpoint written by ``dldl train`` (EMA weights when it has them). ``spec``
        (a model card's) replaces the file's own; it must describe the same network."""
        ck = load_checkpoint(path)
        own = ModelSpec.from_payload(ck, path)
        if spec is not None and own.replace(label_range=None, temperature=1.0) != spec.replace(label_range=None, temperature=1.0):
            raise CheckpointError(path, "the model card's spec describes another network than the file's")
        spec = spec or own
        try:
            model = spec.create_model()
            model.load_state_dict(ck["ema_state_dict"] if ck.get("ema_state_dict") else ck["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(path, f"does not hold a usable dldl model ({first_line(e)})") from None
        return cls(model, spec, {k: ck[k] for k in ("metrics", "config", "epoch") if k in ck}, device)

    @torch.no_grad()
    def predict_batch(self, images: Tensor, tta_flip: bool = True) -> tuple[Tensor, Tensor | None]:
        """``(N, 3, S, S)`` uint8 crops on any device -> ``(N,)`` estimates, ``(N, K)`` distributions.

        With ``tta_flip`` the outputs for the crop and its mirror image are averaged (probabilities
        for distribution losses, estimates for regression).
        """
        images = images.to(self.device)
        x = eval_transform(images, self.input_size)
        views = 2 if tta_flip else 1
        if tta_flip:  # both views in one forward pass (faster at small batches; eval-mode BN is per-image)
            x = torch.cat([x, x.flip(3)])
        out = self.model(x.contiguous(memory_format=torch.channels_last)).float()
        if self.spec.temperature != 1.0 and self.objective.distribution is not None:
            out = out / self.spec.temperature
        est = self.objective.estimate(out, self.labels).unflatten(0, (views, -1))
        dist = None if self.objective.distribution is None else self.objective.distribution(out).unflatten(0, (views, -1))
        # every estimate is linear in the outputs it averages (E[p] for softmax losses, the soft
        # count for ranking), so the mean estimate is the estimate of the mean distribution
        return est.mean(0), None if dist is None else dist.mean(0)

    def predict_arrays(self, images: np.ndarray, tta_flip: bool = True, batch_size: int = 256) -> Prediction:
        """``(N, S, S, 3)`` uint8 face crops (S = ``cache_size`` ideally) -> :class:`Prediction`."""
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 of shape (N, S, S, 3), got {images.dtype} {images.shape}")
        was_training = self.model.training
        self.model.eval()
        est, dist = [], []
        for i in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.require(images[i:i + batch_size], requirements=["C", "W"])).permute(0, 3, 1, 2)
            e, d = self.predict_batch(batch, tta_flip)
            est.append(e.cpu())
            if d is not None:
                dist.append(d.cpu())
        self.model.train(was_training)
        return Prediction(torch.cat(est).numpy(), torch.cat(dist).numpy() if dist else None, self.labels)

    def predict_files(self, paths: list[str | Path], tta_flip: bool = True) -> Prediction:
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

    def to_dict(self, task: str) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box],
                "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist(),
                "score": None if self.score is None else round(self.score, 3), task: round(self.value, 3),
                "interval_90": None if self.interval is None else [round(v, 3) for v in self.interval]}


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

    def to_dict(self, distribution: bool = False) -> dict[str, Any]:
        """JSON-ready: ``{"path", "task", "model", "faces", "error"}``; each face as
        :meth:`FacePrediction.to_dict`, with ``"distribution": {"labels", "probs"}`` when asked."""
        values = None if self.labels is None else [round(v, 4) for v in self.labels.values().tolist()]
        faces = []
        for face in self.faces:
            d = face.to_dict(self.task)
            if distribution:
                d["distribution"] = None if face.distribution is None or values is None else {
                    "labels": values, "probs": np.round(face.distribution, 5).tolist()}
            faces.append(d)
        return {"path": self.path, "task": self.task, "model": self.model, "faces": faces, "error": self.error}


class Predictor:
    """Photo -> faces -> estimates: detect faces, align each to the model's crop template, predict.

    Args:
        estimator: a loaded model (``dldl.load(...)``).
        detector: a face detector (``dldl.faces.get_detector()``); ``None`` treats every input as an
            already aligned face crop.
        template: the alignment template; default: the model's own (``estimator.template``, from
            its spec), i.e. the geometry of the crops it was trained on.
        tta_flip: average over the crop and its mirror image.
    """

    def __init__(self, estimator: Estimator, detector: Any | None = None, template: str | None = None,
                 tta_flip: bool = True) -> None:
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
        return [FacePrediction(box, None if face is None else face.landmarks, None if face is None else face.score,
                               float(pred.estimate[i]), None if intervals is None else tuple(map(float, intervals[i])),
                               None if pred.distribution is None else pred.distribution[i], crop)
                for i, (face, crop, box) in enumerate(found)]
