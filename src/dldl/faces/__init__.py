"""Offline face detection and 5-point alignment for in-the-wild photos.

Detect faces with a :class:`Detector` (``get_detector()``: YuNet in ONNX Runtime), then warp each to a canonical
crop that looks like the training data (``TEMPLATES["utkface"]``: UTKFace's 200x200 chips)::

    from dldl.faces import get_detector, detect_and_align
    for face, crop in detect_and_align(rgb_array, get_detector()):
        ...  # crop: (200, 200, 3) uint8, face.box, face.landmarks, face.score

See docs/FACES.md for the measured templates and the detector choice.
"""

from __future__ import annotations

import numpy as np

from dldl.faces.align import (
    TEMPLATES,
    align_face,
    alignment_matrix,
    estimate_similarity,
    get_template,
    invert_affine,
    transform_points,
    warp_affine,
)
from dldl.faces.detect import (
    DETECTORS,
    LANDMARK_NAMES,
    Detector,
    DetectorUnavailable,
    Face,
    OnnxYuNetDetector,
    ScaledDetector,
    YuFaceDetector,
    check_rgb,
    get_detector,
)


def detect_and_align(image: np.ndarray, detector: Detector, template: str | np.ndarray = "utkface",
                     output_size: int = 200) -> list[tuple[Face, np.ndarray]]:
    """Every face the ``detector`` finds in ``image`` ``(H, W, 3)`` uint8 RGB, with its aligned
    ``(output_size, output_size, 3)`` uint8 crop, in the detector's order (largest first).

    >>> class NoFaces:
    ...     def detect(self, image): return []
    >>> detect_and_align(np.zeros((8, 8, 3), np.uint8), NoFaces())
    []
    """
    check_rgb(image)
    get_template(template)  # fail on a bad template even when there is no face
    return [(face, align_face(image, face.landmarks, template, output_size)) for face in detector.detect(image)]


ALIGN_SIZE = 200
"""Faces are aligned at the side of UTKFace's chips, then resized like the training cache."""


def aligned_crop(image: np.ndarray, face: Face, template: str | np.ndarray, size: int) -> np.ndarray:
    """The crop of one detected ``face`` of ``image`` ``(H, W, 3)`` uint8 RGB as the models see it,
    ``(size, size, 3)`` uint8: aligned to ``template`` at :data:`ALIGN_SIZE`, then resized like the
    training cache. The one path from a photo to a model crop, for prediction and for training on
    photo datasets.

    >>> face = Face((10.0, 10.0, 50.0, 50.0), np.array([[20, 25], [40, 25], [30, 35], [22, 42], [38, 42.]]), 0.9)
    >>> aligned_crop(np.zeros((64, 64, 3), np.uint8), face, "utkface", 108).shape
    (108, 108, 3)
    """
    from PIL import Image

    from dldl.data.images import square_resize

    return square_resize(Image.fromarray(align_face(image, face.landmarks, template, ALIGN_SIZE)), size)


__all__ = [
    "ALIGN_SIZE", "aligned_crop",
    "DETECTORS", "LANDMARK_NAMES", "TEMPLATES", "Detector", "DetectorUnavailable", "Face", "OnnxYuNetDetector",
    "ScaledDetector", "YuFaceDetector", "align_face",
    "alignment_matrix", "detect_and_align", "estimate_similarity", "get_detector", "get_template",
    "invert_affine", "transform_points", "warp_affine",
]
