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
from dldl.data.augment import eval_transform
from dldl.data.images import load_face
from dldl.errors import CheckpointError, DataError
from dldl.labels import LabelSet, quantile
from dldl.losses import get_objective
from dldl.models import create_model


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
    """A trained model ready to predict.

    Args:
        model: the network (``create_model``) with trained weights.
        labels: its label set; loss: the objective name it was trained with.
        input_size: the network's input side; cache_size: the side of the stored face crop the
            centre crop is taken from (training crops come from images of this size).
    """

    def __init__(self, model: nn.Module, labels: LabelSet, loss: str, input_size: int, cache_size: int,
                 task: str = "age", meta: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> None:
        self.model = model.eval()
        self.labels = labels
        self.objective = get_objective(loss)
        self.input_size = input_size
        self.cache_size = cache_size
        self.task = task
        self.meta = meta or {}
        self.device = torch.device(device)
        self.model.to(self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "Estimator":
        """Load a checkpoint or exported model file written by ``dldl train``."""
        ck = load_checkpoint(path)
        try:
            spec, labels = ck["model"], LabelSet(**ck["labels"])
            needed = get_objective(ck["loss"]).num_outputs(labels)
            if needed != int(spec["num_outputs"]):
                raise CheckpointError(path, f"metadata does not match: loss {ck['loss']!r} on {labels.num_labels} labels "
                                            f"needs {needed} outputs, the network has {spec['num_outputs']}")
            model = create_model(spec["name"], num_labels=int(spec["num_outputs"]), hybrid_pool=bool(spec["hybrid_pool"]))
            model.load_state_dict(ck["ema_state_dict"] if ck.get("ema_state_dict") else ck["state_dict"])
            return cls(model, labels, ck["loss"], int(ck["input_size"]), int(ck["cache_size"]), ck.get("task", "age"),
                       {k: ck[k] for k in ("metrics", "config", "epoch") if k in ck}, device)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(path, f"does not hold a usable dldl model ({str(e).splitlines()[0]})") from None

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


ALIGN_SIZE = 200  # faces are aligned at the side of UTKFace's chips, then resized like the training cache
MIN_CROP_SIDE = 20  # a given face crop smaller than this is refused (the detector's smallest face, min_size)


class Predictor:
    """Photo -> faces -> estimates: detect faces, align each to the model's crop template, predict.

    Args:
        estimator: a loaded model (``dldl.load(...)``).
        detector: a face detector (``dldl.faces.get_detector()``); ``None`` treats every input as an
            already aligned face crop.
        template: the alignment template; default ``"utkface"`` for age models and ``"mebeauty"``
            for beauty models, i.e. the crops each was trained on.
        tta_flip: average over the crop and its mirror image.
    """

    def __init__(self, estimator: Estimator, detector: Any | None = None, template: str | None = None,
                 tta_flip: bool = True) -> None:
        self.estimator = estimator
        self.detector = detector
        self.template = template or ("mebeauty" if estimator.task == "beauty" else "utkface")
        self.tta_flip = tta_flip

    def predict(self, image: np.ndarray) -> list[FacePrediction]:
        """``(H, W, 3)`` uint8 RGB photo (or crop) -> one :class:`FacePrediction` per face, largest first.

        Raises:
            DataError: (without a file name) a crop, when there is no detector, smaller than
                :data:`MIN_CROP_SIDE` on a side.
        """
        from PIL import Image

        from dldl.data.images import square_resize
        from dldl.faces import detect_and_align

        size = self.estimator.cache_size
        if self.detector is None:
            h, w = image.shape[:2]
            if min(h, w) < MIN_CROP_SIDE:
                raise DataError(None, f"image is {w}x{h} pixels, too small for a face crop "
                                      f"(at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE})")
            found = [(None, square_resize(Image.fromarray(image), size), (0.0, 0.0, float(w), float(h)))]
        else:
            found = [(face, square_resize(Image.fromarray(crop), size), face.box)
                     for face, crop in detect_and_align(image, self.detector, self.template, ALIGN_SIZE)]
        if not found:
            return []
        pred = self.estimator.predict_arrays(np.stack([c for _, c, _ in found]), self.tta_flip)
        intervals = pred.interval()
        return [FacePrediction(box, None if face is None else face.landmarks, None if face is None else face.score,
                               float(pred.estimate[i]), None if intervals is None else tuple(map(float, intervals[i])),
                               None if pred.distribution is None else pred.distribution[i], crop)
                for i, (face, crop, box) in enumerate(found)]
