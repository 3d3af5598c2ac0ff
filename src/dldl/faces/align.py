"""5-point similarity alignment: estimate rotation + uniform scale + translation from detected
landmarks to a canonical template (:data:`TEMPLATES`) and warp the image with PIL (bicubic).

Conventions: pixel ``(row i, column j)`` has its centre at ``(x=j, y=i)`` (same as the detector).
Templates are normalised to the crop side: ``u = (x + 0.5) / size``, so 0 is the left edge of the
first pixel and 1 the right edge of the last; a template therefore fits any ``output_size``.
A 2x3 ``matrix`` maps points as ``matrix @ [x, y, 1]``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from dldl.faces.detect import check_points, check_rgb


def _template(points: list[list[float]]) -> np.ndarray:
    arr = np.array(points, dtype=np.float64)
    arr.setflags(write=False)
    return arr


TEMPLATES: dict[str, np.ndarray] = {
    # yuface landmarks on UTKFace's 200x200 aligned chips (first 500 names of the coral_test split),
    # each chip reflect-padded by 32, 43, 54 and 65 px so that the detector sees context as in a photo
    # and the stride grid is hit at 4 phases; 20%-trimmed mean of the 1,983 detections scored >= 0.9.
    # `python benchmarks/measure_template.py template utkface --pad 32 43 54 65`; docs/FACES.md.
    "utkface": _template([[0.2931, 0.2847], [0.6861, 0.2783], [0.4934, 0.5126], [0.3299, 0.6851],
                          [0.6647, 0.6776]]),
    # The same on 500 of MEBeauty's 224x224 MTCNN crops (images_crop_align_mtcnn), 1,990 detections.
    "mebeauty": _template([[0.3289, 0.3950], [0.6686, 0.3919], [0.4945, 0.5970], [0.3578, 0.7464],
                           [0.6495, 0.7430]]),
}
"""Canonical ``(5, 2)`` landmark positions (left eye, right eye, nose, mouth left, mouth right),
normalised to ``[0, 1]`` of the crop side; read-only."""


def get_template(template: str | np.ndarray) -> np.ndarray:
    """A template by name from :data:`TEMPLATES`, or a ``(5, 2)`` array of normalised points.

    >>> get_template("utkface").shape
    (5, 2)
    """
    if isinstance(template, str):
        try:
            return TEMPLATES[template]
        except KeyError:
            raise ValueError(f"unknown template {template!r}; known: {', '.join(sorted(TEMPLATES))}") from None
    return check_points(template, "template", n=5)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (no reflection) taking ``src`` points onto ``dst`` (Umeyama 1991).

    Args:
        src, dst: ``(N, 2)`` corresponding points, ``N >= 2``.

    Returns:
        ``(2, 3)`` float64 matrix ``[[a, -b, tx], [b, a, ty]]`` minimising ``sum |M [src, 1] - dst|^2``.

    In 2-D this is the complex regression ``z_dst = w z_src + t``; ``w = s e^{i theta}``.

    >>> src = np.array([[0, 0], [1, 0], [0, 1]])
    >>> (estimate_similarity(src, src @ [[0, 1], [-1, 0]] * 2 + 1).round(6) + 0.0).tolist()  # 90 deg, x2, +1
    [[0.0, -2.0, 1.0], [2.0, 0.0, 1.0]]
    """
    src = check_points(src, "src", n=None)
    dst = check_points(dst, "dst", n=None)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    if len(src) < 2:
        raise ValueError(f"a similarity needs at least 2 point pairs, got shape {src.shape}")
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    zs_c, zd_c = zs - zs.mean(), zd - zd.mean()
    denom = float(np.sum(np.abs(zs_c) ** 2))
    if denom <= 1e-12 * max(1.0, float(np.max(np.abs(zs)) ** 2)):
        raise ValueError("src points all coincide: the similarity is undefined")
    w = np.sum(np.conj(zs_c) * zd_c) / denom
    t = zd.mean() - w * zs.mean()
    return np.array([[w.real, -w.imag, t.real], [w.imag, w.real, t.imag]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine ``matrix`` to ``(N, 2)`` points; returns ``(N, 2)``.

    >>> transform_points(np.array([[1.0, 2.0]]), np.array([[1, 0, 10], [0, 1, 20]])).tolist()
    [[11.0, 22.0]]
    """
    pts = check_points(points, "points", n=None)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got shape {m.shape}")
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine matrix, ``(2, 3)``.

    >>> invert_affine(np.array([[2.0, 0, 4], [0, 2, 6]])).tolist()
    [[0.5, 0.0, -2.0], [0.0, 0.5, -3.0]]
    """
    a = np.linalg.inv(np.asarray(matrix, dtype=np.float64)[:, :2])
    return np.hstack([a, -a @ np.asarray(matrix, dtype=np.float64)[:, 2:]])


def alignment_matrix(landmarks: np.ndarray, template: str | np.ndarray = "utkface",
                     output_size: int = 200) -> np.ndarray:
    """``(2, 3)`` similarity taking image ``landmarks`` ``(5, 2)`` to the template's pixels in an
    ``output_size`` crop (use :func:`transform_points` to move other points into the crop)."""
    target = get_template(template) * output_size - 0.5
    return estimate_similarity(check_points(landmarks, "landmarks", n=5), target)


def warp_affine(image: np.ndarray, matrix: np.ndarray, output_size: int, fill: int | tuple[int, int, int] = 0
                ) -> np.ndarray:
    """Warp ``image`` ``(H, W, 3)`` uint8 by ``matrix`` (image pixels -> output pixels) into an
    ``(output_size, output_size, 3)`` uint8 crop, bicubic; outside the image is ``fill``.

    Only the part of the image under the crop is touched, and when the crop shrinks the face by 2x
    or more the region is first box-averaged (``Image.reduce``) so that the result does not alias.
    """
    check_rgb(image)
    if int(output_size) != output_size or output_size < 1:
        raise ValueError(f"output_size must be a positive integer, got {output_size}")
    output_size = int(output_size)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got shape {matrix.shape}")
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))  # output px / image px
    if not scale > 1e-9:
        raise ValueError(f"matrix is singular (scale {scale:g}): it maps the image to a point")
    inv = invert_affine(matrix)  # output pixel -> image pixel
    h, w = image.shape[:2]
    edge = np.array([[-0.5, -0.5], [output_size - 0.5, -0.5], [-0.5, output_size - 0.5],
                     [output_size - 0.5, output_size - 0.5]])
    k = max(1, int(1.0 / scale))  # box-reduction factor
    corners = transform_points(edge, inv)
    margin = 3 * k  # bicubic reads 2 (reduced) pixels either side; 1 of slack
    x0, y0 = np.floor(corners.min(0)).astype(int) - margin
    x1, y1 = np.ceil(corners.max(0)).astype(int) + margin
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    fill_rgb = (fill,) * 3 if isinstance(fill, int) else tuple(fill)
    if x1 <= x0 or y1 <= y0:  # crop entirely outside the image
        return np.full((output_size, output_size, 3), fill_rgb, dtype=np.uint8)
    x1, y1 = x0 + max(k, (x1 - x0) // k * k), y0 + max(k, (y1 - y0) // k * k)
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))  # the same pixels as crop(), without copying the whole photo
    inv = inv.copy()
    inv[:, 2] -= (x0, y0)
    if k > 1:  # reduced pixel r covers region pixels k r .. k r + k - 1: centre k r + (k - 1) / 2
        region = region.reduce(k)
        inv /= k
        inv[:, 2] -= (k - 1) / (2 * k)
    # PIL samples output pixel centre (x + 0.5, y + 0.5) at inv applied in edge-based coordinates.
    a = inv[:, :2]
    c = inv[:, 2] + 0.5 - a @ [0.5, 0.5]
    data = (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])
    out = region.transform((output_size, output_size), Image.AFFINE, data, resample=Image.BICUBIC,
                           fillcolor=fill_rgb)
    return np.asarray(out)


def align_face(image: np.ndarray, landmarks: np.ndarray, template: str | np.ndarray = "utkface",
               output_size: int = 200, fill: int | tuple[int, int, int] = 0) -> np.ndarray:
    """Crop of ``image`` ``(H, W, 3)`` uint8 with ``landmarks`` ``(5, 2)`` (left eye, right eye,
    nose, mouth left, mouth right; image pixels) moved by the best similarity onto ``template``
    (a :data:`TEMPLATES` name or normalised ``(5, 2)`` points).

    Returns:
        ``(output_size, output_size, 3)`` uint8; parts outside the image are ``fill``.
    """
    check_rgb(image)
    return warp_affine(image, alignment_matrix(landmarks, template, output_size), output_size, fill)
