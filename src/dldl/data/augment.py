"""Batched training augmentation, as plain torch ops (CPU or CUDA).

The DLDL-v2 paper (Gao et al., IJCAI 2018) trains with horizontal flips, grayscale (p 0.5),
resolution degradation (down-scale to between ``output_size / 2`` and ``output_size`` and back
up), rotation within +-15 degrees, random crops, and colour jitter 0.4 (brightness, contrast,
saturation, as ``ColorJitter`` in fb.resnet.torch). Here the whole batch is augmented at once:

1. ``uint8 -> float32`` (sources more than twice the output side are first resized, antialiased,
   to ``ceil(output_size / EVAL_CROP)``, so bilinear sampling does not alias).
2. **One affine warp per image**: crop (zoom), translation, rotation and flip are fused into one
   ``(N, 2, 3)`` matrix and applied with a single batched ``grid_sample`` (bilinear,
   ``'reflection'`` padding for the corners a rotation uncovers). The sampling grid is built like
   ``affine_grid``'s, by broadcasting (``affine_grid`` itself is several times slower on CPU).
3. **Degradation**: each image draws a side ``r`` in ``[min_scale * output_size, output_size]``.
   The warp of step 2 renders image ``i`` directly at side ``r_i`` (into the corner of an
   ``output_size`` canvas) -- this *is* the bilinear down-scale -- and a second batched
   ``grid_sample`` scales each ``r_i`` square back up to ``output_size``, with exactly
   ``F.interpolate(mode="bilinear", align_corners=False)``'s weights. So the degradation is per
   image, with two ``grid_sample`` calls for the whole batch and no Python loop. (As with
   ``F.interpolate``'s default, the down-scale is not antialiased: it decimates by at most
   ``1 / min_scale``, 2x by default.)
4. **Colour jitter** (fixed order brightness, contrast, saturation, each a blend as in
   fb.resnet.torch with a factor from ``1 +- color_jitter``), then **grayscale** (ITU-R 601 luma
   in all channels), then a clamp to ``[0, 1]``. The chain is one per-image affine map of the
   pixel and its luma, applied in one pass (see ``_apply``).
5. ``normalize`` with the ImageNet ``MEAN`` / ``STD``.

Geometry conventions: coordinates are ``grid_sample``'s normalised ones (``align_corners=False``,
the image spans ``[-1, 1]``). A crop of side fraction ``c`` centred at ``(tx, ty)`` with rotation
``a`` (degrees, positive = counter-clockwise as displayed) and an optional mirror samples the
source at ``(tx, ty) + c * [[cos a, -sin a], [sin a, cos a]] @ (+-x_out, y_out)``.

Test-time crop (``EVAL_CROP``): ``dldl.data.preprocess.eval_transform`` (numpy, what every
estimator feeds its network) takes the centred crop of side
``EVAL_CROP = 0.9`` of the source, the *mean* training crop side: training crop sides are drawn
uniformly from ``crop_scale = (0.8, 1.0)``, whose mean is 0.9, so faces appear at the same scale,
on average, at training and test time. With the default 72 px cache and 64 px network that is a
64.8 px crop resized to 64 px (for 240 -> 224: a 216 px crop resized to 224). If you change
``crop_scale``, keep its mean at ``EVAL_CROP`` (a test checks the defaults agree).

Randomness comes only from the ``generator`` passed in (the global torch RNG when it is ``None``).
The generator may live on any device: the per-image parameters are drawn on its device, computed
on the CPU (they are a few numbers per image) and moved to the images' device, so a CPU generator
gives the same parameters for CPU and CUDA images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dldl.data.preprocess import EVAL_CROP, MEAN, PRESIZE_RATIO, STD

__all__ = [
    "AugmentConfig",
    "degrade",
    "gaussian_blur",
    "normalize",
    "train_transform",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as fb.resnet.torch's grayscale


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (defaults: the DLDL-v2 paper's).

    Attributes:
        output_size: side of the network input, e.g. 64 or 224.
        flip: probability of a horizontal mirror.
        grayscale: probability of replacing the colours by their luma.
        rotation_deg: rotation angle drawn uniformly from ``[-rotation_deg, rotation_deg]``.
        min_scale: resolution degradation: each image is resized (bilinear) down to a side drawn
            uniformly from the integers in ``[min_scale, 1] * output_size`` and back up; 1.0
            disables.
        crop_scale: crop side as a fraction of the source side, drawn uniformly (zoom); its mean
            should equal ``EVAL_CROP``.
        translate: the crop centre moves uniformly within ``translate`` times the margin the
            crop leaves inside the source (1.0: the crop can touch the source border; 0.0:
            centred crops).
        color_jitter: brightness, contrast and saturation factors drawn from
            ``[1 - color_jitter, 1 + color_jitter]``; 0 disables.
        blur, jpeg, noise, sharpen, gamma: image-quality corruptions applied to the source crop
            before the warp, each with this probability, drawn independently of the label, so
            that the model cannot read image quality as an age cue (:func:`degrade`). Gaussian blur
            of sigma ``U(0.3, 1.5)`` source pixels (a 108 px cache; about 0.6-2.8 px of a 200 px
            chip), JPEG re-encoding at quality ``U(15, 90)``, Gaussian noise of std ``U(2, 12)``
            grey levels, unsharp masking of amount ``U(0.5, 1.5)``, gamma ``U(0.6, 1.6)``
            (illumination). All 0 by default (the paper's recipe).
        enabled: ``False`` makes ``train_transform`` the test-time centre crop (``eval_transform``).

    >>> AugmentConfig(64).crop_scale
    (0.8, 1.0)
    >>> AugmentConfig(64, flip=1.5)
    Traceback (most recent call last):
    ...
    ValueError: AugmentConfig.flip must be a probability in [0, 1], got 1.5
    """

    output_size: int
    flip: float = 0.5
    grayscale: float = 0.5
    rotation_deg: float = 15.0
    min_scale: float = 0.5
    crop_scale: tuple[float, float] = (0.8, 1.0)
    translate: float = 1.0
    color_jitter: float = 0.4
    blur: float = 0.0
    jpeg: float = 0.0
    noise: float = 0.0
    sharpen: float = 0.0
    gamma: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.output_size, bool) or not isinstance(self.output_size, int) or self.output_size < 1:
            raise ValueError(f"AugmentConfig.output_size must be a positive int, got {self.output_size!r}")
        for name in ("flip", "grayscale", "blur", "jpeg", "noise", "sharpen", "gamma"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {p!r}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ValueError(f"AugmentConfig.rotation_deg must be in [0, 180], got {self.rotation_deg!r}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"AugmentConfig.min_scale must be in (0, 1], got {self.min_scale!r}")
        if not isinstance(self.crop_scale, tuple):  # e.g. a list from a YAML/JSON config
            object.__setattr__(self, "crop_scale", tuple(self.crop_scale))
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (0.0, -1.0)
        if not 0.0 < lo <= hi:
            raise ValueError(f"AugmentConfig.crop_scale must be (low, high) with 0 < low <= high, got {self.crop_scale!r}")
        if not 0.0 <= self.translate <= 1.0:
            raise ValueError(f"AugmentConfig.translate must be in [0, 1], got {self.translate!r}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"AugmentConfig.color_jitter must be in [0, 1), got {self.color_jitter!r}")


def normalize(x: Tensor) -> Tensor:
    """``(x - MEAN) / STD`` per channel, for float ``x`` in ``[0, 1]`` of shape ``(..., 3, H, W)``.

    Returns a new float tensor of the same shape (the input is not modified).

    >>> normalize(torch.full((1, 3, 2, 2), 0.485))[0, 0, 0, 0].item()
    0.0
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 3 or x.shape[-3] != 3:
        got = f"{type(x).__name__}" if not isinstance(x, Tensor) else f"shape {tuple(x.shape)} dtype {x.dtype}"
        raise ValueError(f"normalize expects a floating tensor of shape (..., 3, H, W), got {got}")
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    inv_std = torch.tensor([1.0 / s for s in STD], dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean).mul_(inv_std)


def train_transform(images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Training augmentation (flip, crop, translation, rotation, degradation, colour jitter,
    grayscale), then ``normalize``.

    Args:
        images: ``uint8`` ``(N, 3, S, S)``, any device, contiguous or channels_last.
        cfg: the augmentation settings; ``cfg.enabled=False`` gives the test-time centre crop
            (:func:`dldl.data.preprocess.eval_transform`, computed here in torch).
        generator: the only source of randomness (any device); ``None``: the global torch RNG.

    Returns:
        ``float32`` ``(N, 3, cfg.output_size, cfg.output_size)`` on the images' device, in their
        memory format.

    >>> x = torch.randint(0, 256, (2, 3, 72, 72), dtype=torch.uint8)
    >>> y = train_transform(x, AugmentConfig(64), torch.Generator().manual_seed(0))
    >>> y.shape, y.dtype
    (torch.Size([2, 3, 64, 64]), torch.float32)
    >>> torch.equal(y, train_transform(x, AugmentConfig(64), torch.Generator().manual_seed(0)))
    True
    """
    _check_images(images, "train_transform")
    if not isinstance(cfg, AugmentConfig):
        raise ValueError(f"train_transform expects an AugmentConfig, got {type(cfg).__name__}")
    params = _sample_params(images.shape[0], cfg, generator) if cfg.enabled else _centre_crop(images.shape[0], cfg.output_size)
    if cfg.enabled and max(cfg.blur, cfg.jpeg, cfg.noise, cfg.sharpen, cfg.gamma) > 0:
        images = degrade(images, cfg, generator)
    return _apply(images, cfg.output_size, params)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of float ``(N, C, H, W)`` images, each with its own ``sigma`` ``(N,)``
    (in pixels; 0 leaves the image as it is), reflect-padded.

    >>> x = torch.zeros(2, 1, 9, 9); x[:, :, 4, 4] = 1
    >>> y = gaussian_blur(x, torch.tensor([0.0, 1.0]))
    >>> torch.equal(y[0], x[0]), round(float(y[1].sum()), 4), float(y[1, 0, 4, 4]) < 1
    (True, 1.0, True)
    >>> gaussian_blur(x, torch.tensor([1.0]))
    Traceback (most recent call last):
    ...
    ValueError: sigma must have shape (2,) for images of shape (2, 1, 9, 9), got (1,)
    """
    n, c, h, w = x.shape
    if sigma.shape != (n,):
        raise ValueError(f"sigma must have shape ({n},) for images of shape {tuple(x.shape)}, got {tuple(sigma.shape)}")
    radius = max(1, math.ceil(3 * float(sigma.max()))) if n else 1
    radius = min(radius, (min(h, w) - 1) // 2) or 1
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    s = sigma.to(x.device, torch.float32).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = torch.where(sigma.to(x.device)[:, None] > 0, k, (t[None, :] == 0).float())
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 2r+1)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def degrade(images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Image-quality corruptions of uint8 ``(N, 3, S, S)`` crops (blur, JPEG, noise, sharpening,
    gamma; each per image with the probability ``cfg`` gives it); returns uint8 of the same shape.

    >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> cfg = AugmentConfig(32, blur=1.0, jpeg=1.0, noise=1.0, sharpen=1.0, gamma=1.0)
    >>> y = degrade(x, cfg, torch.Generator().manual_seed(0))
    >>> y.shape == x.shape, y.dtype, bool((y != x).any())
    (True, torch.uint8, True)
    >>> torch.equal(degrade(x, AugmentConfig(32)), x)
    True
    """
    n = images.shape[0]
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, 10, generator=generator, device=device, dtype=torch.float32).cpu()
    on = {name: u[:, i] < getattr(cfg, name) for i, name in enumerate(("blur", "jpeg", "noise", "sharpen", "gamma"))}
    if n == 0 or not any(bool(v.any()) for v in on.values()):
        return images
    channels_last = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    x = images.contiguous().float()
    if bool(on["gamma"].any()):
        g = torch.where(on["gamma"], 0.6 + 1.0 * u[:, 9], 1.0).to(x.device).view(n, 1, 1, 1)
        x = 255.0 * (x / 255.0).pow(g)
    if bool(on["blur"].any()):
        x = gaussian_blur(x, torch.where(on["blur"], 0.3 + 1.2 * u[:, 5], 0.0))
    if bool(on["sharpen"].any()):
        amount = torch.where(on["sharpen"], 0.5 + u[:, 8], 0.0).to(x.device).view(n, 1, 1, 1)
        x = x + amount * (x - gaussian_blur(x, torch.full((n,), 1.0)))
    if bool(on["noise"].any()):
        std = torch.where(on["noise"], 2.0 + 10.0 * u[:, 7], 0.0).to(x.device).view(n, 1, 1, 1)
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x.device)
        x = x + std * noise
    out = x.round_().clamp_(0, 255).to(torch.uint8)
    if bool(on["jpeg"].any()):
        out = _jpeg(out, on["jpeg"], (15 + 75 * u[:, 6]).round().long())
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _jpeg(images: Tensor, which: Tensor, quality: Tensor) -> Tensor:
    """JPEG re-encode the chosen uint8 ``(N, 3, S, S)`` images at their ``quality`` (PIL, on the CPU)."""
    import io

    import numpy as np
    from PIL import Image

    out = images.clone()
    for i in torch.nonzero(which).flatten().tolist():
        buf = io.BytesIO()
        Image.fromarray(images[i].permute(1, 2, 0).cpu().numpy()).save(buf, "JPEG", quality=int(quality[i]))
        buf.seek(0)
        arr = np.asarray(Image.open(buf).convert("RGB"))
        out[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(images.device)
    return out


# --------------------------------------------------------------------------------------------
# internals


@dataclass
class _Params:
    """Per-image augmentation parameters, all CPU tensors of length N (``None``: op skipped)."""

    flip: Tensor  # bool
    angle: Tensor  # degrees, counter-clockwise as displayed
    crop: Tensor  # crop side / source side
    tx: Tensor  # crop centre, normalised coordinates
    ty: Tensor
    size: Tensor  # int64 degradation side (== output_size: none)
    brightness: Tensor | None
    contrast: Tensor | None
    saturation: Tensor | None
    gray: Tensor | None  # bool


_NUM_DRAWS = 10


def _sample_params(n: int, cfg: AugmentConfig, generator: torch.Generator | None) -> _Params:
    """Draw every image's parameters with one ``torch.rand`` call on the generator's device.

    All columns are drawn whatever the config, so a seed gives the same geometry whether or not,
    e.g., colour jitter is on.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, _NUM_DRAWS, generator=generator, device=device, dtype=torch.float32)
    u = u.cpu().double()
    out = cfg.output_size
    lo, hi = cfg.crop_scale
    crop = lo + (hi - lo) * u[:, 3]
    margin = cfg.translate * (1.0 - crop)
    lo_side = max(1, math.ceil(cfg.min_scale * out - 1e-9))
    size = (lo_side + u[:, 6] * (out + 1 - lo_side)).floor().clamp_(max=out).long()
    cj = cfg.color_jitter

    def jitter(col: int) -> Tensor | None:
        return (1.0 + cj * (2.0 * u[:, col] - 1.0)).float() if cj > 0 else None

    return _Params(
        flip=u[:, 0] < cfg.flip,
        angle=cfg.rotation_deg * (2.0 * u[:, 2] - 1.0),
        crop=crop,
        tx=margin * (2.0 * u[:, 4] - 1.0),
        ty=margin * (2.0 * u[:, 5] - 1.0),
        size=size,
        brightness=jitter(7),
        contrast=jitter(8),
        saturation=jitter(9),
        gray=(u[:, 1] < cfg.grayscale) if cfg.grayscale > 0 else None,
    )


def _centre_crop(n: int, out: int) -> _Params:
    """The parameters of the test-time view: the centred ``EVAL_CROP`` crop, no flip, no jitter."""
    return _Params(flip=torch.zeros(n, dtype=torch.bool), angle=torch.zeros(n, dtype=torch.float64),
                   crop=torch.full((n,), EVAL_CROP, dtype=torch.float64), tx=torch.zeros(n, dtype=torch.float64),
                   ty=torch.zeros(n, dtype=torch.float64), size=torch.full((n,), out, dtype=torch.int64),
                   brightness=None, contrast=None, saturation=None, gray=None)


def _theta(p: _Params) -> Tensor:
    """``(N, 2, 3)`` float32 matrices mapping output to source normalised coordinates."""
    a = torch.deg2rad(p.angle.double())
    cos, sin = torch.cos(a), torch.sin(a)
    sx = torch.where(p.flip, -p.crop, p.crop).double()
    c = p.crop.double()
    # source = t + c * R^T @ (sx/c * x, y), R = [[cos, sin], [-sin, cos]] (CCW as displayed, y down)
    theta = torch.stack(
        [
            torch.stack([sx * cos, -c * sin, p.tx.double()], dim=1),
            torch.stack([sx * sin, c * cos, p.ty.double()], dim=1),
        ],
        dim=1,
    )
    return theta.float()


def _apply(images: Tensor, out: int, p: _Params) -> Tensor:
    """Warp + degrade, colour, grayscale and normalise ``images`` with the parameters ``p``."""
    n, _, s, _ = images.shape
    device = images.device
    channels_last = n > 0 and not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    x = images.contiguous().to(torch.float32)  # values 0..255; the 1/255 is folded in below
    if n == 0:
        return x.new_empty((0, 3, out, out))
    if s > PRESIZE_RATIO * out:  # avoid aliasing from bilinear sampling far below the source rate
        side = math.ceil(out / EVAL_CROP)
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)

    # 1-2. geometry: one warp to each image's degraded side, then one up-sampling to ``out``.
    theta = _theta(p).to(device, non_blocking=True)
    size = p.size.to(device, non_blocking=True)
    x = F.grid_sample(x, _warp_grid(theta, size, out), mode="bilinear", padding_mode="reflection", align_corners=False)
    if bool((p.size < out).any()):
        x = F.grid_sample(x, _upsample_grid(size, out), mode="bilinear", padding_mode="border", align_corners=False)

    # 3-4. colour jitter and grayscale. Each step is per-image affine in the pixel and its luma L
    # (luma weights sum to 1, so L(L) = L), hence the whole chain is y = A x + B L(x) + C:
    #   brightness b:  x -> b x                        (blend with black)
    #   contrast a:    x -> a x + (1 - a) mean(L(x))   (blend with the mean luma)
    #   saturation s:  x -> s x + (1 - s) L(x)         (blend with the luma; grayscale is s = 0)
    # which gives k = a b, C = (1 - a) b mean(L(x)), A = s k, B = (1 - s) k.
    ones = torch.ones(n, dtype=torch.float64)
    bright = ones if p.brightness is None else p.brightness.double()
    contrast = ones if p.contrast is None else p.contrast.double()
    sat = ones if p.saturation is None else p.saturation.double()
    if p.gray is not None:
        sat = torch.where(p.gray, 0.0, sat)
    k = (contrast * bright) / 255.0
    coef_a = (sat * k).float()
    coef_b = ((1.0 - sat) * k).float()
    jitter = p.brightness is not None or p.contrast is not None or p.saturation is not None

    def per_image(v: Tensor) -> Tensor:
        return v.to(device, non_blocking=True).view(n, 1, 1, 1)

    offset = None
    if p.contrast is not None:
        mean_luma = (x.mean(dim=(2, 3)) * torch.tensor(_LUMA, device=device)).sum(1)  # (N,), 0..255
        offset = per_image(((1.0 - contrast) * bright / 255.0).float()) * mean_luma.view(n, 1, 1, 1)
    luma = _luma(x).mul_(per_image(coef_b)) if bool((coef_b != 0).any()) else None
    if bool((coef_a != coef_a[0]).any()):
        x.mul_(per_image(coef_a))
    else:
        x.mul_(float(coef_a[0]))
    if luma is not None:
        x.add_(luma if offset is None else luma.add_(offset))
    elif offset is not None:
        x.add_(offset)
    if jitter:
        x.clamp_(0.0, 1.0)

    # 5. normalise (in place: ``x`` is a fresh tensor here).
    x.sub_(torch.tensor(MEAN, device=device).view(1, 3, 1, 1))
    x.mul_(torch.tensor([1.0 / v for v in STD], device=device).view(1, 3, 1, 1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _luma(x: Tensor) -> Tensor:
    """``(N, 1, H, W)`` luma of ``(N, 3, H, W)`` RGB."""
    r, g, b = x.unbind(1)
    return (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def _warp_grid(theta: Tensor, size: Tensor, out: int) -> Tensor:
    """``(N, out, out, 2)`` sampling grid of the fused warp + down-scale.

    Image ``i`` is rendered at side ``size[i]`` into the top-left ``size[i] x size[i]`` corner of
    an ``out x out`` canvas: pixel ``k`` of a side-``r`` image sits at normalised coordinate
    ``(2k + 1) / r - 1``, mapped through ``theta[i]`` (what ``affine_grid`` does, for
    ``r = out``). The rest of the canvas is sampled too but never read.
    """
    k = torch.arange(out, device=theta.device, dtype=torch.float32).mul_(2.0).add_(1.0)
    lin = k / size.to(torch.float32).view(-1, 1) - 1.0  # (N, out)
    xs, ys = lin.unsqueeze(1), lin.unsqueeze(2)  # (N, 1, out), (N, out, 1)
    t = theta.view(-1, 6, 1, 1)
    grid = torch.empty((lin.shape[0], out, out, 2), device=theta.device, dtype=torch.float32)
    torch.add(t[:, 0] * xs + t[:, 2], t[:, 1] * ys, out=grid[..., 0])
    torch.add(t[:, 3] * xs + t[:, 5], t[:, 4] * ys, out=grid[..., 1])
    return grid


def _upsample_grid(size: Tensor, out: int) -> Tensor:
    """``(N, out, out, 2)`` grid that resizes the top-left ``size[i]`` square of an ``out``-side
    canvas to ``out`` (bilinear, ``align_corners=False``, edge pixels replicated): the same
    weights as ``F.interpolate(..., mode="bilinear")`` up-sampling, per image.
    """
    r = size.to(torch.float32).view(-1, 1)
    m = torch.arange(out, device=size.device, dtype=torch.float32).add_(0.5)
    u = (m * r / out - 0.5).clamp_(min=0.0)
    u = torch.minimum(u, r - 1.0)  # source pixel coordinate, (N, out)
    g = u.mul_(2.0 / out).add_(1.0 / out - 1.0)
    n = size.shape[0]
    grid = torch.empty((n, out, out, 2), device=size.device, dtype=torch.float32)
    grid[..., 0] = g.unsqueeze(1)
    grid[..., 1] = g.unsqueeze(2)
    return grid


def _check_images(images: Tensor, where: str) -> None:
    expected = "uint8 tensor of shape (N, 3, S, S)"
    if not isinstance(images, Tensor):
        raise ValueError(f"{where}: expected a {expected}, got {type(images).__name__}")
    shape = tuple(images.shape)
    ok = images.dim() == 4 and shape[1] == 3 and shape[2] == shape[3] and shape[2] > 0
    if images.dtype != torch.uint8 or not ok:
        raise ValueError(f"{where}: expected a {expected}, got dtype {images.dtype} shape {shape}")


def _check_size(output_size: int, where: str) -> None:
    if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
        raise ValueError(f"{where}: output_size must be a positive int, got {output_size!r}")
