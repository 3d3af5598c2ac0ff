"""Write a calibrated copy of a checkpoint without shipping it (research: a calibrated run to
evaluate, a distillation teacher at ``--temperature 1``); the input is never overwritten.

The fit is :func:`dldl.release.calibrate` (the run's own validation splits, pooled; ``--one-view``
also turns flip TTA off in the copy's spec; ``--temperature T`` sets T and reads no data). A model
that ships goes through ``dldl release``, which calibrates as this does and installs the result.

    python experiments/calibrate.py runs/age_wild/best.pt runs/age_wild/calibrated.pt
    python experiments/calibrate.py mobilenet_v2-beauty runs/teachers/default.pt --one-view --temperature 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dldl.errors import run_script
from dldl.release import calibrate, check_new, save_new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a run folder, a checkpoint or (with --temperature) a shipped name")
    ap.add_argument("out", type=Path)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--one-view", action="store_true", help="the copy runs without flip TTA; fit the temperature on that view")
    ap.add_argument("--temperature", type=float, help="set this temperature instead of fitting one; no data is read")
    args = ap.parse_args()
    check_new(args.out, "out")
    payload, report = calibrate(args.checkpoint, args.one_view, args.level, args.temperature)
    print(json.dumps({**report, "out": str(save_new(args.out, payload, "out"))}, indent=1))


if __name__ == "__main__":
    run_script(main)
