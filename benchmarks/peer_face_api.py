"""Run the comparison peer ``@vladmandic/face-api`` (npm 1.7.15) on a list of photos, one JSON line per image.

This is a second *comparison peer* for dldl's age estimates, beside ``peer_age_and_gender.py``: it
runs in node, from its own folder of npm packages, never from dldl's environment. Its weights are
only ever used here, to produce the peer's own predictions; they are never used to initialise,
distil into or fine-tune any dldl model.

What it runs (the peer's full pipeline, ``faceapi.detectAllFaces(tensor, new
faceapi.SsdMobilenetv1Options({minConfidence: 0.5})).withFaceLandmarks().withAgeAndGender()``): its
default face detector SSD MobileNet v1 (WIDER FACE weights, minimum confidence 0.5, as the package's
default), its 68-point landmark net, then the age/gender net (a small Xception-like network with an
age regression head) on each face cut out along the landmark-aligned box. It runs on TensorFlow.js
4.22.0 with the **WASM backend** (``dist/face-api.node-wasm.js``, SIMD, one thread; no tfjs-node, no
native canvas). The gender output is computed but not written. The models ship inside the npm
package (its ``model/`` folder, about 13 MB) and the ``.wasm`` binaries inside
``@tensorflow/tfjs-backend-wasm``; nothing is downloaded at run time. Licence: MIT (the package's
``LICENSE`` and ``package.json``; the model folder has no other notice). Mind the data: the package's
``TUTORIAL.md`` says its age net was trained on 80% of UTK(Face), FG-NET, ChaLearn, Wiki, IMDB,
CACD, MegaAge and MegaAge-Asian, so its UTKFace and FG-NET numbers are not held out.

Install (outside the repo; only the npm registry is needed; node >= 14, tested on node 20)::

    mkdir -p /work/peer-node && cd /work/peer-node && npm init -y
    npm install @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0

(4.22.0 is the tfjs that face-api 1.7.15 is built against: its ``dist/tfjs.version.js``.)

Run (with any python that has Pillow; this file imports nothing from dldl)::

    python benchmarks/peer_face_api.py --list paths.txt --out peer.jsonl \\
        [--node /usr/bin/node] [--modules /work/peer-node/node_modules]

The list and the output are those of ``peer_age_and_gender.py`` (see its docstring): one line
``{"path", "faces", "age", "box", "seconds"}`` per image, ``age`` and ``box`` of the largest face by
box area, ``"error"`` for a file that cannot be decoded, and the run goes on. ``age`` is face-api's
regressed age rounded to whole years; ``box`` is its detection box ``{x, y, width, height}`` as
``[left, top, right, bottom]`` in whole pixels of the EXIF-oriented image, inclusive endpoints. Images
are decoded here in Python exactly as ``peer_age_and_gender.py`` does (EXIF orientation, then RGB)
and their raw RGB bytes go to one long-lived node process (``benchmarks/peer_face_api.mjs``) that
builds ``tf.tensor3d(rgb, [h, w, 3], 'int32')``. ``seconds`` is the wall time of decoding plus the
round trip to node (pixels through the pipe, the pipeline, the reply) for that image; node's start,
the backend, the model loading and one warm-up call on a blank image come before the first image
and are not counted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from peer_age_and_gender import read_list, write_records

HERE = Path(__file__).resolve().parent
MODULES = Path("/work/peer-node/node_modules")


class FaceApi:
    """face-api in one node process: :meth:`predict` sends an image's RGB bytes and reads back its faces.

    A frame on node's stdin is width and height as little-endian uint32, then the RGB bytes; each
    reply is one JSON line on its stdout. node's stderr passes through to ours.
    """

    def __init__(self, node: str, modules: str | Path):
        self.proc = subprocess.Popen([node, str(HERE / "peer_face_api.mjs"), str(modules)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.info = self._reply()
        if not self.info.get("ready"):
            raise SystemExit(f"face-api did not start: {self.info}")

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:  # node is gone: every image after this one would fail the same way
            raise SystemExit(f"face-api's node process exited (status {self.proc.wait()}); its message is above")
        return json.loads(line)

    def predict(self, image) -> list[dict]:
        """The faces of an RGB PIL image, in ``age_and_gender``'s shape (see ``write_records``)."""
        width, height = image.size
        try:
            self.proc.stdin.write(struct.pack("<II", width, height))
            self.proc.stdin.write(image.tobytes())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # node died; _reply says so
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return [{"face": f["face"], "age": {"value": round(f["age"])}} for f in reply["faces"]]

    def close(self) -> None:
        """Close node's stdin (its loop ends) and wait for it to exit."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        self.proc.wait()

    def __enter__(self) -> FaceApi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--list", required=True, help="text file with one image path per line")
    ap.add_argument("--out", required=True, help="JSON-lines output file (overwritten)")
    ap.add_argument("--node", default="node", help="the node executable (default: node on PATH)")
    ap.add_argument("--modules", type=Path, default=MODULES,
                    help=f"node_modules with face-api and the tfjs wasm backend (default {MODULES})")
    args = ap.parse_args(argv)
    if not shutil.which(args.node):
        ap.error(f"no node at {args.node!r}")
    if not (args.modules / "@vladmandic" / "face-api" / "model").is_dir():
        ap.error(f"{args.modules}: no @vladmandic/face-api in it; install it as this file's docstring says")

    paths = read_list(args.list)
    t0 = time.perf_counter()
    with FaceApi(args.node, args.modules) as predictor:
        info = predictor.info
        print(f"face-api {info['face_api']} (tfjs {info['tfjs']}, {info['backend']}, simd {info['simd']}, "
              f"threads {info['threads']}): models loaded in {time.perf_counter() - t0:.2f} s; {len(paths)} images",
              file=sys.stderr)
        write_records(paths, predictor, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
