"""The network's test-time input, in numpy: crop geometry, normalisation and the eval transform.

The photo pipeline (and every :class:`~dldl.runtime.Estimator`, whatever runs its network) turns
stored face crops into network inputs here, without torch. Training augmentation
(:mod:`dldl.data.augment`, torch) draws its crops around the same geometry: with augmentation off,
``train_transform`` equals :func:`eval_transform` (``tests/data/test_augment.py`` checks it).
"""

from __future__ import annotations

import functools
import math

import numpy as np

MEAN = (0.485, 0.456, 0.406)
"""ImageNet per-channel mean (RGB) of images in ``[0, 1]``."""
STD = (0.229, 0.224, 0.225)
"""ImageNet per-channel standard deviation (RGB) of images in ``[0, 1]``."""

EVAL_CROP = 0.9
"""Side of the test-time centre crop as a fraction of the source side (mean of the default
``AugmentConfig.crop_scale``)."""

CACHE_RATIO = 9 / 8
"""Side of the stored (cached) face crop over the network input side: training crops of scale
``crop_scale`` are cut from it, and the eval centre crop is ``EVAL_CROP`` of it."""

PRESIZE_RATIO = 2.0
"""Sources more than this many times the output side are first resized (antialiased) to
``ceil(output_size / EVAL_CROP)``, so that bilinear sampling does not alias."""


def cache_size_for(input_size: int) -> int:
    """The stored crop side for a network input side (``input_size * 9 // 8``).

    >>> cache_size_for(64), cache_size_for(96), cache_size_for(224)
    (72, 108, 252)
    """
    return input_size * 9 // 8


def eval_transform(images: np.ndarray, output_size: int, flip: bool = False, crop: float = EVAL_CROP) -> np.ndarray:
    """Test-time transform: the centre crop of side ``crop`` (a fraction of the source side, ``EVAL_CROP``
    unless asked), resized bilinearly to ``output_size``, then normalised with ``MEAN`` / ``STD``.

    The resampling is ``grid_sample``'s (bilinear, ``align_corners=False``), written as one
    ``(output_size, S)`` weight matrix per axis and applied as a few weighted gathers (two source
    pixels per output pixel at the usual sizes). No BLAS call: OpenBLAS threads spin after each
    call, and in ``dldl predict`` that spinning doubled the CPU time per photo.

    Args:
        images: ``uint8`` ``(N, S, S, 3)`` face crops (RGB, as stored).
        output_size: side of the output.
        flip: mirror horizontally (for test-time flip averaging).
        crop: side of the centre crop as a fraction of ``S``, in ``(0, 1]`` (other views of the face;
            the models are trained and calibrated at ``EVAL_CROP``).

    Returns:
        ``float32`` ``(N, 3, output_size, output_size)``, C-contiguous.

    >>> x = np.random.default_rng(0).integers(0, 256, (2, 72, 72, 3), dtype=np.uint8)
    >>> y = eval_transform(x, 64)
    >>> y.shape, y.dtype
    ((2, 3, 64, 64), dtype('float32'))
    >>> bool(np.allclose(eval_transform(x, 64, flip=True), y[..., ::-1], atol=1e-5))
    True
    >>> eval_transform(x, 64, crop=0.95).shape
    (2, 3, 64, 64)
    >>> eval_transform(x, 64, crop=1.5)
    Traceback (most recent call last):
    ...
    ValueError: eval_transform: crop must be a fraction of the source side in (0, 1], got 1.5
    >>> eval_transform(x[..., :2], 64)
    Traceback (most recent call last):
    ...
    ValueError: eval_transform: expected uint8 images of shape (N, S, S, 3), got uint8 (2, 72, 72, 2)
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[3] != 3 or images.shape[1] != images.shape[2] or images.shape[1] == 0:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"eval_transform: expected uint8 images of shape (N, S, S, 3), got {got}")
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) or output_size < 1:
        raise ValueError(f"eval_transform: output_size must be a positive int, got {output_size!r}")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0.0 < crop <= 1.0:
        raise ValueError(f"eval_transform: crop must be a fraction of the source side in (0, 1], got {crop!r}")
    idx, w = _taps(images.shape[1], int(output_size), float(crop))
    x = _resample(images.astype(np.float32), idx, w[:, :, None, None], 1)  # rows: (N, out, S, 3)
    x = np.multiply(x.transpose(0, 3, 1, 2), _SCALE, order="C")  # planar (N, 3, out, S), scaled as normalised
    x = _resample(x, idx[::-1] if flip else idx, w[::-1] if flip else w, 3)  # columns, mirrored for a flip
    x -= _SHIFT  # each output pixel's weights sum to 1, so the mean comes off once, at the end
    return x


_SCALE = (1.0 / (255.0 * np.asarray(STD))).astype(np.float32).reshape(1, 3, 1, 1)
_SHIFT = (np.asarray(MEAN) / np.asarray(STD)).astype(np.float32).reshape(1, 3, 1, 1)


def _resample(x: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """``sum_t take(x, idx[:, t], axis) * w[:, t]`` for float32 ``x``: ``idx`` ``(out, T)`` source
    indices, ``w`` their weights, shaped to broadcast against the result (``(out, T, 1, 1)`` for
    the rows of ``(N, H, W, C)``, ``(out, T)`` for the last axis). C-contiguous, float32."""
    out = np.take(x, idx[:, 0], axis=axis) * w[:, 0]
    for t in range(1, idx.shape[1]):
        out += np.take(x, idx[:, t], axis=axis) * w[:, t]
    return out


@functools.lru_cache(maxsize=16)
def _taps(side: int, out: int, crop: float = EVAL_CROP) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero entries of :func:`_crop_matrix` per output pixel: ``(out, T)`` source indices
    and float32 weights (zero-weight taps padded where a row has fewer)."""
    m = _crop_matrix(side, out, crop)
    taps = max(1, int((m != 0).sum(1).max()))
    idx = np.zeros((out, taps), dtype=np.int64)
    w = np.zeros((out, taps), dtype=np.float32)
    for i, row in enumerate(m):
        nz = np.flatnonzero(row)
        idx[i, :len(nz)], w[i, :len(nz)] = nz, row[nz]
    return idx, w


def _crop_matrix(side: int, out: int, crop: float = EVAL_CROP) -> np.ndarray:
    """``(out, side)`` weights of the eval crop along one axis: an antialiased pre-resize when
    ``side > PRESIZE_RATIO * out`` (``F.interpolate(..., antialias=True)``'s filter), then
    ``grid_sample``'s bilinear sampling of the centred crop of side ``crop`` (coordinates clipped to
    the image, as its ``reflection`` padding does within half a pixel of the border)."""
    pre = None
    if side > PRESIZE_RATIO * out:
        small = math.ceil(out / EVAL_CROP)  # as training does, whatever the crop
        pre, side = _antialias_matrix(side, small), small
    g = crop * ((2.0 * np.arange(out) + 1.0) / out - 1.0)  # normalised output coordinates
    x = np.clip(((g + 1.0) * side - 1.0) / 2.0, 0.0, side - 1.0)  # source pixel coordinates
    x0 = np.floor(x).astype(np.int64)
    w1 = x - x0
    m = np.zeros((out, side))
    m[np.arange(out), x0] += 1.0 - w1
    m[np.arange(out), np.minimum(x0 + 1, side - 1)] += w1
    return m if pre is None else m @ pre


def _antialias_matrix(side: int, out: int) -> np.ndarray:
    """``(out, side)`` weights of a bilinear (triangle) down-scale with the filter widened by the
    scale: PIL's and ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``'s."""
    scale = side / out
    m = np.zeros((out, side))
    for i in range(out):
        centre = scale * (i + 0.5)
        lo, hi = max(int(centre - scale + 0.5), 0), min(int(centre + scale + 0.5), side)
        w = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - centre + 0.5) / scale))
        m[i, lo:hi] = w / w.sum()
    return m
