"""Sanity check of the ImageNet weights and of each backbone's padding and input normalisation.

Runs each weight file with its ImageNet classifier (num_outputs=1000) on natural photos, in the
configuration dldl uses and in the alternatives, and prints: how far the BatchNorm inputs' batch
means are from the running means (in running standard deviations; smaller = inputs like those the
weights were trained on), the mean top-1 probability, and how often the top-1 class agrees with
MobileNetV2's. Needs both weight packages (see docs/BACKBONES.md).

    python benchmarks/imagenet_sanity.py --photos ../shared/data/mebeauty/original_images --every 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dldl.data.augment import eval_transform
from dldl.data.images import load_face
from dldl.models import create_model
from dldl.models.backbone_weights import backbone_weights_path, load_backbone_weights
from dldl.models.mobilenet import EFFICIENTNET_LITE0, MOBILENET_V2, MobileNet

LITE = dict(bn_eps=1e-3, input_mean=(127 / 255,) * 3, input_std=(128 / 255,) * 3)
VARIANTS = {  # label: (model, weights)
    "mobilenet_v2 (dldl: symmetric pad, ImageNet mean/std)": (lambda: create_model("mobilenet_v2", 1000), "mobilenet_v2"),
    "mobilenet_v2, TF SAME pad": (lambda: MobileNet(MOBILENET_V2, 1000, tf_same=True), "mobilenet_v2"),
    "efficientnet_lite0 (dldl: TF SAME pad, (p-127)/128)": (lambda: create_model("efficientnet_lite0", 1000), "efficientnet_lite0"),
    "efficientnet_lite0, symmetric pad": (lambda: MobileNet(EFFICIENTNET_LITE0, 1000, **LITE), "efficientnet_lite0"),
    "efficientnet_lite0, ImageNet mean/std": (lambda: MobileNet(EFFICIENTNET_LITE0, 1000, tf_same=True, bn_eps=1e-3),
                                              "efficientnet_lite0"),
}


def with_classifier(model: nn.Module, name: str) -> nn.Module:
    """``model`` with the ImageNet backbone and, in its 1000-way head, the ImageNet classifier."""
    path = backbone_weights_path(name, "imagenet")
    load_backbone_weights(model, path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "classifier.1." if "classifier.1.weight" in sd else "_fc."
    model.head.load_state_dict({"weight": sd[prefix + "weight"], "bias": sd[prefix + "bias"]})
    return model.eval()


def run(model: nn.Module, x: Tensor) -> tuple[Tensor, list[float]]:
    """``(N, 1000)`` probabilities and, per BatchNorm, the mean |batch mean - running mean| / running std."""
    gaps: list[float] = []

    def hook(m: nn.BatchNorm2d, inp: tuple[Tensor], out: Tensor) -> None:
        z = inp[0].double()
        gaps.append(((z.mean((0, 2, 3)) - m.running_mean.double()).abs() / (m.running_var.double() + m.eps).sqrt()).mean().item())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        p = model(x).softmax(1)
    for h in handles:
        h.remove()
    return p, gaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", required=True, help="folder of photos (searched recursively for .jpg)")
    ap.add_argument("--every", type=int, default=1, help="take every k-th photo (sorted by path)")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(Path(args.photos).rglob("*.jpg"))[:: args.every]
    images = torch.from_numpy(np.stack([load_face(f, args.size * 9 // 8) for f in files])).permute(0, 3, 1, 2)
    x = eval_transform(images, args.size)
    print(f"{len(files)} photos at {args.size} px\n")
    print("| weights, configuration | BN mean gap: stem | first 10 BN | all BN | mean top-1 prob | top-1 = MobileNetV2's |")
    print("| --- | --- | --- | --- | --- | --- |")
    ref = None
    for label, (build, name) in VARIANTS.items():
        p, gaps = run(with_classifier(build(), name), x)
        ref = p if ref is None else ref
        agree = (p.argmax(1) == ref.argmax(1)).float().mean().item()
        print(f"| {label} | {gaps[0]:.3f} | {np.mean(gaps[:10]):.3f} | {np.mean(gaps):.3f} | {p.max(1).values.mean():.3f} "
              f"| {agree:.2f} |", flush=True)


if __name__ == "__main__":
    main()
