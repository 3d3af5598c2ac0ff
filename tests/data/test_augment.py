"""Tests of the batched augmentation (``dldl.data.augment``) and of the test-time transform it
must agree with (``dldl.data.preprocess.eval_transform``, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dldl.data import preprocess
from dldl.data.augment import (
    AugmentConfig,
    _apply,
    _Params,
    _sample_params,
    normalize,
    train_transform,
)
from dldl.data.preprocess import EVAL_CROP, MEAN, STD


def eval_transform(x: torch.Tensor, out: int, flip: bool = False, crop: float = EVAL_CROP) -> torch.Tensor:
    """The numpy eval transform on ``(N, 3, S, S)`` torch images, as a tensor (for comparisons)."""
    return torch.from_numpy(preprocess.eval_transform(x.permute(0, 2, 3, 1).numpy(), out, flip, crop))

# Every random component off: only the geometry of the eval centre crop is left.
STILL = dict(flip=0.0, grayscale=0.0, rotation_deg=0.0, min_scale=1.0, crop_scale=(EVAL_CROP, EVAL_CROP), translate=0.0, color_jitter=0.0)


def images(n: int = 4, side: int = 72, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def smooth_images(n: int = 4, side: int = 72, seed: int = 0) -> torch.Tensor:
    """Random but smooth images, so interpolation differences stay small."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return (F.interpolate(low, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1) * 255).round().to(torch.uint8)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def neutral_params(n: int, out: int, **changes) -> _Params:
    fields = dict(
        flip=torch.zeros(n, dtype=torch.bool),
        angle=torch.zeros(n, dtype=torch.float64),
        crop=torch.ones(n, dtype=torch.float64),
        tx=torch.zeros(n, dtype=torch.float64),
        ty=torch.zeros(n, dtype=torch.float64),
        size=torch.full((n,), out, dtype=torch.int64),
        brightness=None,
        contrast=None,
        saturation=None,
        gray=None,
    )
    fields.update(changes)
    return _Params(**fields)


@pytest.mark.parametrize(("side", "out"), [(72, 64), (240, 224), (200, 64)])
def test_shapes_dtype_and_range(side: int, out: int) -> None:
    x = images(3, side)
    for y in (train_transform(x, AugmentConfig(out), gen()), eval_transform(x, out)):
        assert y.shape == (3, 3, out, out)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()
        raw = unnormalize(y)
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_empty_batch() -> None:
    x = torch.zeros(0, 3, 72, 72, dtype=torch.uint8)
    assert train_transform(x, AugmentConfig(64), gen()).shape == (0, 3, 64, 64)
    assert eval_transform(x, 64).shape == (0, 3, 64, 64)


def test_channels_last_input_gives_the_same_values() -> None:
    x = images()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y, y_cl = train_transform(x, AugmentConfig(64), gen(1)), train_transform(x_cl, AugmentConfig(64), gen(1))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_cl)
    assert torch.equal(train_transform(x, AugmentConfig(64, enabled=False)), train_transform(x_cl, AugmentConfig(64, enabled=False)))


def test_same_seed_same_output_other_seed_other_output() -> None:
    x, cfg = images(), AugmentConfig(64)
    a = train_transform(x, cfg, gen(7))
    assert torch.equal(a, train_transform(x, cfg, gen(7)))
    assert not torch.allclose(a, train_transform(x, cfg, gen(8)))
    g = gen(7)  # a generator advances: two calls differ
    assert not torch.allclose(train_transform(x, cfg, g), train_transform(x, cfg, g))


def test_global_rng_when_no_generator() -> None:
    x, cfg = images(), AugmentConfig(64)
    torch.manual_seed(3)
    a = train_transform(x, cfg)
    torch.manual_seed(3)
    assert torch.equal(a, train_transform(x, cfg))


def test_eval_crop_is_the_mean_training_crop() -> None:
    lo, hi = AugmentConfig(64).crop_scale
    assert (lo + hi) / 2 == pytest.approx(EVAL_CROP)


def test_flip_only_equals_flipped_eval() -> None:
    x = images()
    y = train_transform(x, AugmentConfig(64, **{**STILL, "flip": 1.0}), gen())
    ref = eval_transform(x, 64, flip=True)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(ref, eval_transform(x, 64).flip(-1), atol=1e-5, rtol=0)


def test_identity_configs_equal_eval() -> None:
    x = images()
    ref = eval_transform(x, 64)
    torch.testing.assert_close(train_transform(x, AugmentConfig(64, enabled=False), gen()), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(train_transform(x, AugmentConfig(64, **STILL), gen()), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("side", "out", "flip"), [(72, 64, False), (108, 96, True), (252, 224, False), (64, 64, True),
                                                   (200, 64, False), (300, 96, True)])
def test_numpy_eval_transform_equals_the_torch_centre_crop(side: int, out: int, flip: bool) -> None:
    # what every estimator feeds its network (numpy) against training's own warp with every random
    # part off (torch grid_sample, and the antialiased pre-resize for sources over twice the output)
    x = images(3, side, seed=side)
    cfg = AugmentConfig(out, **{**STILL, "flip": float(flip)})
    torch.testing.assert_close(eval_transform(x, out, flip), train_transform(x, cfg, gen()), atol=2e-4, rtol=0)


@pytest.mark.parametrize(("side", "out", "crop"), [(108, 96, 0.8), (108, 96, 0.95), (72, 64, 1.0), (300, 96, 0.85)])
def test_eval_transform_at_another_crop_equals_the_torch_crop_of_that_scale(side: int, out: int, crop: float) -> None:
    # other test-time views of a face (experiments/crop_sensitivity.py views): the same warp at a fixed crop_scale
    x = images(3, side, seed=side)
    cfg = AugmentConfig(out, **{**STILL, "crop_scale": (crop, crop)})
    torch.testing.assert_close(eval_transform(x, out, crop=crop), train_transform(x, cfg, gen()), atol=2e-4, rtol=0)
    assert not torch.allclose(eval_transform(x, out, crop=crop), eval_transform(x, out), atol=1e-2)


def test_eval_is_the_resized_centre_crop() -> None:
    # A 2x up-scale of the centre crop: compare with F.interpolate of the exact crop, away from
    # the border (where F.interpolate replicates the crop's edge and eval reads the pixels beyond).
    x = smooth_images(2, 40)
    crop = x[:, :, 2:38, 2:38].float() / 255  # EVAL_CROP * 40 = 36 px, centred
    ref = normalize(F.interpolate(crop, size=(72, 72), mode="bilinear", align_corners=False))
    torch.testing.assert_close(eval_transform(x, 72)[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-4, rtol=0)


def test_grayscale_gives_equal_channels() -> None:
    cfg = AugmentConfig(64, grayscale=1.0)  # with the other augmentations on
    raw = unnormalize(train_transform(images(), cfg, gen()))
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)
    none = unnormalize(train_transform(images(), AugmentConfig(64, **STILL), gen()))
    assert (none[:, 0] - none[:, 1]).abs().max() > 0.1


def dot_image(n: int, side: int, dx: int, dy: int) -> torch.Tensor:
    """Black images with a white 3x3 dot centred ``(dx, dy)`` pixels from the image centre."""
    x = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    cx, cy = side // 2 + dx, side // 2 + dy  # pixel side//2 is 0.5 px right/below the centre
    x[:, :, cy - 1 : cy + 2, cx - 1 : cx + 2] = 255
    return x


def centroid(y: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` brightness-weighted (x, y) centroid, relative to the image centre, in pixels."""
    w = unnormalize(y).mean(1).clamp(min=0)
    w = torch.where(w > 0.2, w, 0.0)
    side = y.shape[-1]
    c = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
    total = w.sum((1, 2))
    return torch.stack([(w * c.view(1, 1, -1)).sum((1, 2)) / total, (w * c.view(1, -1, 1)).sum((1, 2)) / total], 1)


def test_positive_angle_rotates_counter_clockwise() -> None:
    x = dot_image(1, 64, 20, 0)  # right of the centre
    y = _apply(x, 64, neutral_params(1, 64, angle=torch.tensor([90.0], dtype=torch.float64)))
    cx, cy = centroid(y)[0].tolist()
    assert abs(cx) < 1.0 and abs(cy + 20.5) < 1.0  # now above the centre


def test_rotation_moves_a_dot_where_expected() -> None:
    n, side, out = 16, 72, 64
    cfg = AugmentConfig(out, **{**STILL, "rotation_deg": 15.0, "crop_scale": (1.0, 1.0)})
    x = dot_image(n, side, 24, -8)
    y = train_transform(x, cfg, gen(5))
    angle = torch.deg2rad(_sample_params(n, cfg, gen(5)).angle)  # the angles that call drew
    assert angle.abs().max() > math.radians(10)
    px, py = 24.5, -7.5  # dot centre relative to the image centre, source pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    # counter-clockwise as displayed (y down): (x, y) -> (x cos + y sin, -x sin + y cos)
    expected = torch.stack([px * cos + py * sin, -px * sin + py * cos], 1) * (out / side)
    assert (centroid(y) - expected.float()).abs().max() < 1.5


def test_crops_stay_inside_the_source() -> None:
    cfg = AugmentConfig(64, **{**STILL, "crop_scale": (0.8, 1.0), "translate": 1.0})
    p = _sample_params(500, cfg, gen())
    assert ((p.tx.abs() + p.crop) <= 1 + 1e-9).all() and ((p.ty.abs() + p.crop) <= 1 + 1e-9).all()
    assert p.crop.min() >= 0.8 and p.crop.max() <= 1.0 and p.tx.abs().max() > 0.15
    assert (_sample_params(50, AugmentConfig(64, translate=0.0), gen()).tx == 0).all()


def test_degradation_is_interpolate_down_and_up() -> None:
    x = smooth_images(4, 64)
    sizes = torch.tensor([32, 40, 57, 64])
    y = _apply(x, 64, neutral_params(4, 64, size=sizes))
    for i, r in enumerate(sizes.tolist()):
        small = F.interpolate(x[i : i + 1].float() / 255, size=(r, r), mode="bilinear", align_corners=False)
        ref = normalize(F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False))
        torch.testing.assert_close(y[i : i + 1], ref, atol=1e-4, rtol=0)


def test_degradation_sizes_span_the_range() -> None:
    size = _sample_params(2000, AugmentConfig(64), gen()).size
    assert size.min() == 32 and size.max() == 64
    assert (_sample_params(50, AugmentConfig(64, min_scale=1.0), gen()).size == 64).all()


def test_colour_jitter_matches_sequential_blends() -> None:
    # fb.resnet.torch's ColorJitter, in the order brightness, contrast, saturation.
    n = 6
    x = smooth_images(n, 64)
    g = gen(2)
    b, c, s = (0.6 + 0.8 * torch.rand(n, generator=g) for _ in range(3))
    gray = torch.tensor([False, True] * 3)
    y = _apply(x, 64, neutral_params(n, 64, brightness=b, contrast=c, saturation=s, gray=gray))

    def luma(v: torch.Tensor) -> torch.Tensor:
        return (0.299 * v[:, 0] + 0.587 * v[:, 1] + 0.114 * v[:, 2]).unsqueeze(1)

    v = x.float() / 255
    col = lambda t: t.view(n, 1, 1, 1)  # noqa: E731
    v = v * col(b)
    v = col(c) * v + (1 - col(c)) * luma(v).mean((1, 2, 3), keepdim=True)
    v = col(s) * v + (1 - col(s)) * luma(v)
    v = torch.where(col(gray), luma(v).expand_as(v), v).clamp(0, 1)
    torch.testing.assert_close(y, normalize(v), atol=1e-4, rtol=0)


def test_jitter_changes_colours_within_range() -> None:
    x = smooth_images(8)
    cfg = AugmentConfig(64, **{**STILL, "color_jitter": 0.4})
    y = train_transform(x, cfg, gen())
    assert (y - eval_transform(x, 64)).abs().amax((1, 2, 3)).min() > 0.05


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 3, 72, 72),  # float
        torch.zeros(2, 1, 72, 72, dtype=torch.uint8),
        torch.zeros(2, 3, 72, 64, dtype=torch.uint8),
        torch.zeros(3, 72, 72, dtype=torch.uint8),
    ],
)
def test_bad_images_raise_with_both_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError) as info:
        train_transform(bad, AugmentConfig(64), gen())
    message = str(info.value)
    assert "(N, 3, S, S)" in message and str(tuple(bad.shape)) in message and str(bad.dtype) in message


@pytest.mark.parametrize("bad", [np.zeros((2, 72, 72, 3)), np.zeros((2, 72, 72, 1), np.uint8),
                                 np.zeros((2, 72, 64, 3), np.uint8), np.zeros((72, 72, 3), np.uint8)])
def test_numpy_eval_transform_names_a_bad_batch(bad: np.ndarray) -> None:
    with pytest.raises(ValueError) as info:
        preprocess.eval_transform(bad, 64)
    message = str(info.value)
    assert "(N, S, S, 3)" in message and str(bad.shape) in message and str(bad.dtype) in message


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\).*\(2, 4, 5, 5\)"):
        normalize(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match="output_size"):
        eval_transform(images(), 0)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(64, crop_scale=(1.0, 0.8))
    assert AugmentConfig(64, crop_scale=[0.8, 1.0]).crop_scale == (0.8, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_scale"):
        AugmentConfig(64, min_scale=0.0)
    with pytest.raises(ValueError, match="AugmentConfig"):
        train_transform(images(), {"output_size": 64})  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, cfg = images(8), AugmentConfig(64)
    cpu = train_transform(x, cfg, gen(4))
    cuda = train_transform(x.cuda(), cfg, gen(4))  # a CPU generator drives CUDA images too
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-3, rtol=0)
    cuda_gen = torch.Generator(device="cuda").manual_seed(4)
    assert train_transform(x.cuda(), cfg, cuda_gen).shape == (8, 3, 64, 64)
    still = AugmentConfig(64, enabled=False)
    torch.testing.assert_close(train_transform(x.cuda(), still).cpu(), eval_transform(x, 64), atol=2e-4, rtol=0)
