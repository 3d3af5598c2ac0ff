"""Videos and folders of frames: sampling, tracking by box overlap, one estimate per track, an
annotated clip. The clips are made here with PyAV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", reason="PyAV (video input) is not installed")

from dldl.assets import PHOTOS_DIR  # noqa: E402
from dldl.video import box_iou, read_frame_folder, read_frames, track_faces  # noqa: E402

PHOTO = PHOTOS_DIR / "suzana-sousa-IC1_YWQn6so-unsplash.jpg"  # two faces


def make_clip(path: Path, frames: int = 30, rate: int = 10) -> Path:
    """The bundled photo moving 2 px a frame across a grey canvas, as an H.264 MP4 of ``frames``
    frames at ``rate`` fps (both faces stay whole)."""
    photo = Image.open(PHOTO).convert("RGB")
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = 560, 520, "yuv420p"
    for i in range(frames):
        canvas = Image.new("RGB", (560, 520), (128, 128, 128))
        canvas.paste(photo, (2 * i, 10))
        frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def test_sampling_by_every_and_by_fps(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    assert [f.index for f in read_frames(clip, every=10)] == [0, 10, 20]
    by_time = list(read_frames(clip, fps=2))
    assert [f.time for f in by_time] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5] and by_time[0].image.shape == (520, 560, 3)


class BoxesDetector:
    """A fake predictor: per frame, faces at the given boxes, each estimated by its x position."""

    def __init__(self, per_frame):
        self.per_frame, self.calls = per_frame, 0

    def predict(self, image):
        boxes = self.per_frame[self.calls]
        self.calls += 1
        return [SimpleNamespace(box=b, value=float(b[0]), distribution=None) for b in boxes]


def test_tracks_follow_overlapping_boxes_and_end_after_a_gap():
    frames = [SimpleNamespace(index=i, time=i / 2, image=None) for i in range(10)]
    a, b = (0, 0, 10, 10), (50, 50, 60, 60)
    per_frame = [[a, b], [b, (1, 0, 11, 10)], [(2, 0, 12, 10)], [], [], [(3, 0, 13, 10)],  # 2 frames missed: same track
                 [], [], [], [(4, 0, 14, 10)]]  # back after 3 missed frames: a new track (max_gap 2)
    tracks = track_faces(iter(frames), BoxesDetector(per_frame), max_gap=2)
    assert [(t.id, t.frames) for t in tracks] == [(1, [0, 1, 2, 5]), (2, [0, 1]), (3, [9])]
    assert box_iou(a, (1, 0, 11, 10)) > 0.3


def dldl_cli(*args):
    return subprocess.run([sys.executable, "-m", "dldl.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_dldl_predict_on_a_clip_gives_one_line_per_track_and_an_annotated_video(tmp_path):
    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
    clip = make_clip(tmp_path / "clip.mp4")
    done = dldl_cli("predict", clip, "--json", "--fps", "2", "--save-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["track"] for r in rows] == [1, 2]  # the two faces of the photo, followed through the pan
    for r in rows:
        assert (r["first_frame"], r["last_frame"], r["frames"], r["first_time"], r["last_time"]) == (0, 25, 6, 0.0, 2.5)
        assert 5 < r["age"] < 80 and r["interval_90"][0] < r["age"] < r["interval_90"][1] and r["error"] is None
    annotated = tmp_path / "out" / "clip_age.mp4"
    assert f"wrote {annotated}" in done.stderr
    with av.open(str(annotated)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_folder_of_frames_and_bad_videos(tmp_path):
    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_frames(make_clip(tmp_path / "clip.mp4", frames=12), every=4)):
        Image.fromarray(frame.image).save(folder / f"{i:03d}.png")
    assert len(list(read_frame_folder(folder))) == 3
    rows = [json.loads(line) for line in dldl_cli("predict", folder, "--frames", "--json").stdout.splitlines()]
    assert [(r["track"], r["frames"], r["first_time"]) for r in rows] == [(1, 3, None), (2, 3, None)]
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    done = dldl_cli("predict", tmp_path / "broken.mp4", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    row = json.loads(done.stdout.splitlines()[0])
    assert row["error"].startswith(f"{tmp_path / 'broken.mp4'}: not a readable video")
    mixed = dldl_cli("predict", tmp_path / "clip.mp4", PHOTO)
    assert mixed.returncode == 2 and "give photos and videos in separate runs" in mixed.stderr
