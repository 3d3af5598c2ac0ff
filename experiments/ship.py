"""Ship a trained checkpoint as a package model: a compact fp16 copy in ``src/dldl/assets/models/``
with its model card (the card's fields from a JSON file, plus the spec, sha256 and size).

    python experiments/ship.py runs/age_wild/calibrated.pt mobilenet_v2-age card.json

Refuses to replace a shipped model of the same name (remove it first, on purpose).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dldl.assets import MODELS_DIR
from dldl.hub import install
from dldl.errors import run_script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("name")
    ap.add_argument("card", type=Path, help="JSON with the card's fields (summary, data, metrics, licence, ...)")
    args = ap.parse_args()
    if (MODELS_DIR / f"{args.name}.pt").exists():
        raise SystemExit(f"{MODELS_DIR / args.name}.pt exists; remove it first to replace it")
    path = install(args.checkpoint, args.name, json.loads(args.card.read_text()))
    print(f"wrote {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    run_script(main)
