"""benchmarks/peer_face_api.py: the wrapper's frames and JSON lines, against a stand-in for node; the real peer when installed."""

from __future__ import annotations

import json
import shutil
import sys

import peer_face_api
import pytest
from PIL import Image

from dldl.assets import PHOTOS_DIR

# Speaks peer_face_api.mjs's protocol: a "ready" line, then per frame two faces (the smaller one
# first) whose ages encode the frame's size, so the test sees the pixels arrived whole.
FAKE_NODE = '''#!{python}
import json, struct, sys
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
send({{"ready": True, "face_api": "fake", "tfjs": "-", "backend": "none", "simd": False, "threads": False}})
while True:
    head = sys.stdin.buffer.read(8)
    if len(head) < 8:
        break
    w, h = struct.unpack("<II", head)
    rgb = sys.stdin.buffer.read(w * h * 3)
    if rgb[:3] == bytes([255, 0, 0]):
        send({{"error": "Error: a red corner"}})
        continue
    send({{"faces": [{{"face": [0, 0, 1, 1], "age": 99.0}},
                     {{"face": [0, 0, w - 1, h - 1], "age": w + h / 10 + 0.3 + (len(rgb) == w * h * 3)}}]}})
'''


def test_wrapper_writes_one_line_per_image_against_a_stand_in_for_node(tmp_path, capsys):
    node = tmp_path / "fake-node"
    node.write_text(FAKE_NODE.format(python=sys.executable))
    node.chmod(0o755)
    modules = tmp_path / "node_modules"
    (modules / "@vladmandic" / "face-api" / "model").mkdir(parents=True)
    Image.new("RGB", (30, 20), "gray").save(tmp_path / "gray.png")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    lst = tmp_path / "paths.txt"
    lst.write_text(f"# comment\n{tmp_path / 'gray.png'}\n\n{tmp_path / 'bad.jpg'}\n{tmp_path / 'red.png'}\n")
    out = tmp_path / "peer.jsonl"

    assert peer_face_api.main(["--list", str(lst), "--out", str(out), "--node", str(node), "--modules", str(modules)]) == 0
    gray, bad, red = [json.loads(line) for line in out.read_text().splitlines()]
    assert gray["faces"] == 2 and gray["box"] == [0, 0, 29, 19] and gray["age"] == 33  # 30 + 2 + 0.3 + 1, rounded
    assert bad["error"].startswith("UnidentifiedImageError") and bad["age"] is None and bad["faces"] == 0
    assert red["error"] == "RuntimeError: Error: a red corner"
    assert set(gray) == {"path", "faces", "age", "box", "seconds"} and gray["seconds"] > 0
    assert "images: 3  with a face: 1  errors: 2" in capsys.readouterr().out


def test_wrapper_refuses_a_folder_without_face_api(tmp_path):
    lst = tmp_path / "paths.txt"
    lst.write_text("x.jpg\n")
    with pytest.raises(SystemExit):
        peer_face_api.main(["--list", str(lst), "--out", str(tmp_path / "o.jsonl"), "--node", sys.executable,
                            "--modules", str(tmp_path)])


@pytest.mark.skipif(not shutil.which("node") or not (peer_face_api.MODULES / "@vladmandic" / "face-api").is_dir(),
                    reason=f"node or face-api in {peer_face_api.MODULES} not installed (see benchmarks/peer_face_api.py)")
def test_the_real_peer_finds_a_face_in_a_bundled_photo(tmp_path):
    photo = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    lst, out = tmp_path / "paths.txt", tmp_path / "peer.jsonl"
    lst.write_text(f"{photo}\n")
    assert peer_face_api.main(["--list", str(lst), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["faces"] >= 1 and 1 <= rec["age"] <= 100 and len(rec["box"]) == 4
