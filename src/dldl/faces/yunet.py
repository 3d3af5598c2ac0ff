"""YuNet, the face detection network of libfacedetection (the one compiled into the ``yuface``
wheel), as an ONNX graph run by ONNX Runtime: it works wherever onnxruntime does (Python 3.11+, Linux,
macOS, Windows, x86_64 and arm64), offline, its weights inside the package
(``assets/detectors/<name>.onnx``, checked against the sha256 of its card ``<name>.json``).

Arrays in, arrays out; :class:`dldl.faces.detect.OnnxYuNetDetector` makes it a detector (working
resolution, mapping back to the photo, ``min_size``). The graph
(``ShiqiYu/libfacedetection.train``, ``onnx/yunet_s_dynamic.onnx``) takes ``(1, 3, H, W)`` float32
**BGR** in 0..255, no normalisation, ``H`` and ``W`` multiples of 32 (its input is dynamic already;
an image is zero-padded at the bottom and right, as the training repository's ``AUTO`` mode does).
For each stride ``s`` in 8, 16, 32 it gives one row per anchor point ``(s * column, s * row)``:

* ``cls_s``, ``obj_s``: ``(1, N, 1)`` sigmoids; the score is ``sqrt(cls * obj)``, as libfacedetection
  reports it (the yuface scores are these, floored to whole percents);
* ``bbox_s``: ``(1, N, 4)`` box centre offset ``/ s`` and ``log(size / s)``;
* ``kps_s``: ``(1, N, 10)`` five points, offsets ``/ s`` from the anchor, in the order of
  :data:`dldl.faces.detect.LANDMARK_NAMES` (image-left eye first).

Boxes are ``(x0, y0, x1, y1)`` in the pixel coordinates of :mod:`dldl.faces.detect` (the centre of
pixel ``(row i, column j)`` at ``(x=j, y=i)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dldl.assets import DETECTORS_DIR
from dldl.errors import CheckpointError, first_line
from dldl.files import file_sha256

STRIDES = (8, 16, 32)
OUTPUTS = tuple(f"{head}_{s}" for head in ("cls", "obj", "bbox", "kps") for s in STRIDES)
"""The graph's output names, as the training repository's export writes them."""
NMS_IOU = 0.45  # libfacedetection's overlap threshold
TOP_K = 1000  # candidates kept for the NMS, the highest scores first (libfacedetection's)
SCORE_FLOOR = 0.2
"""libfacedetection's own confidence threshold: a candidate scored below it is never reported, even
with ``min_score`` 0 (yuface's lowest scores are 0.20); without it a photo gave ~1,900 "faces"."""
DEFAULT_MODEL = "yunet_s"


def model_card(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The card of a shipped detector network (``assets/detectors/<name>.json``).

    Raises:
        CheckpointError: no such card (the message lists the shipped ones), or a damaged card.
    """
    path = DETECTORS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DETECTORS_DIR.glob("*.json"))) or "none"
        raise CheckpointError(path, f"no shipped face detector network {name!r} (shipped: {known})")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        card["file"], card["sha256"]  # noqa: B018 -- both must be there
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(path, f"damaged detector card ({first_line(e)[:120]})") from None
    return card


def checked_model(name: str = DEFAULT_MODEL) -> Path:
    """The path of a shipped detector network after its sha256 matched its card.

    Raises:
        CheckpointError: the card or the file is missing, or the file's sha256 is not the card's.
    """
    card = model_card(name)
    path = DETECTORS_DIR / card["file"]
    if not path.is_file():
        raise CheckpointError(path, "face detector network missing from the package: reinstall dldl")
    if file_sha256(path) != card["sha256"]:
        raise CheckpointError(path, "sha256 does not match its card; the face detector network is damaged or was "
                                    "replaced: reinstall dldl")
    return path


def to_input(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H', W')`` float32 BGR, zero-padded at the bottom and right
    to multiples of 32 (the graph's largest stride).

    >>> to_input(np.zeros((40, 70, 3), np.uint8)).shape
    (1, 3, 64, 96)
    """
    h, w = image.shape[:2]
    x = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    x[0, :, :h, :w] = image[:, :, ::-1].transpose(2, 0, 1)
    return x


def decode(outputs: dict[str, np.ndarray], height: int, width: int, min_score: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph's outputs for a ``(1, 3, height, width)`` input -> the candidates scored at least
    ``min_score``, before NMS: ``scores (N,)``, ``boxes (N, 4)`` ``(x0, y0, x1, y1)``,
    ``points (N, 5, 2)``, all float64, in input pixels."""
    scores, boxes, points = [], [], []
    for s in STRIDES:
        cls, obj = (np.clip(outputs[f"{k}_{s}"].reshape(-1), 0.0, 1.0) for k in ("cls", "obj"))
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= min_score)
        columns = width // s
        anchors = np.stack([keep % columns, keep // columns], 1).astype(np.float64) * s
        bbox = outputs[f"bbox_{s}"].reshape(-1, 4)[keep].astype(np.float64)
        centre, size = bbox[:, :2] * s + anchors, np.exp(bbox[:, 2:]) * s
        kps = outputs[f"kps_{s}"].reshape(-1, 5, 2)[keep].astype(np.float64) * s + anchors[:, None]
        scores.append(score[keep].astype(np.float64))
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], 1))
        points.append(kps)
    return np.concatenate(scores), np.concatenate(boxes), np.concatenate(points)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, top_k: int = TOP_K) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, the highest score first: a box
    goes when it overlaps a kept one by more than ``iou`` (intersection over union).

    >>> nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.]]), np.array([0.8, 0.9, 0.7])).tolist()
    [1, 2]
    """
    order = np.argsort(-scores, kind="stable")[:top_k]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-12)]
    return np.array(keep, dtype=np.int64)


class YuNet:
    """One ONNX Runtime session of a YuNet graph: ``(H, W, 3)`` uint8 RGB -> faces as arrays.

    Args:
        path: the ``.onnx`` file (:func:`checked_model` gives the shipped one).
        threads: ONNX Runtime's intra-op threads (``None``: one per core). Threads do not spin
            between calls (as :class:`dldl.runtime.OnnxNetwork`): a detector runs beside the model.

    Raises:
        CheckpointError: a file ONNX Runtime cannot load, or a graph without YuNet's outputs.
    """

    def __init__(self, path: str | Path, threads: int | None = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises many types for a bad file
            raise CheckpointError(self.path, f"not an ONNX graph ONNX Runtime can load ({first_line(e)[:160]})") from None
        names = [o.name for o in self.session.get_outputs()]
        if sorted(names) != sorted(OUTPUTS):
            raise CheckpointError(self.path, f"not a YuNet graph: its outputs are {', '.join(names[:6])}..., "
                                             f"not {', '.join(OUTPUTS[:3])}...")
        self.input, self.outputs = self.session.get_inputs()[0].name, names

    def __call__(self, image: np.ndarray, min_score: float, iou: float = NMS_IOU
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The faces in ``image`` scored at least ``min_score`` (and :data:`SCORE_FLOOR`), after NMS, the highest score first:
        ``scores (N,)``, ``boxes (N, 4)``, ``points (N, 5, 2)`` in ``image`` pixels."""
        x = to_input(image)
        values = self.session.run(None, {self.input: x})
        scores, boxes, points = decode(dict(zip(self.outputs, values)), x.shape[2], x.shape[3], max(min_score, SCORE_FLOOR))
        keep = nms(boxes, scores, iou)
        return scores[keep], boxes[keep], points[keep]
