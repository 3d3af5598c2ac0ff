"""Parameters and forward FLOPs of each architecture at each input size (one image, 101 labels).

FLOPs as counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products,
one multiply-add = 2 FLOPs; BatchNorm, activations, pooling and padding are not counted.

    python benchmarks/model_cost.py --models mobilenet_v2 efficientnet_lite0 thin_age_net tiny_age_net \
        --sizes 64 96 128 224
"""

from __future__ import annotations

import argparse

from benchlib import forward_flops, parameter_count

from dldl.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2", "efficientnet_lite0", "thin_age_net", "tiny_age_net"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128, 224])
    args = ap.parse_args()
    print("| model | parameters | " + " | ".join(f"GFLOPs at {s} px" for s in args.sizes) + " |")
    print("| --- | --- |" + " --- |" * len(args.sizes))
    for name in args.models:
        model = create_model(name, num_outputs=101).eval()
        params = parameter_count(model)
        flops = [forward_flops(model, s) / 1e9 for s in args.sizes]
        print(f"| {name} | {params:,} | " + " | ".join(f"{f:.3f}" for f in flops) + " |", flush=True)


if __name__ == "__main__":
    main()
