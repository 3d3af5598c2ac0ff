"""Videos and folders of frames: sampling, tracking by box overlap, one estimate per track, an
annotated clip. The clips are made here with PyAV."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import dldl_cli

av = pytest.importorskip("av", reason="PyAV (video input) is not installed")

from dldl.assets import PHOTOS_DIR  # noqa: E402
from dldl.errors import DataError  # noqa: E402
from dldl.video import box_iou, read_frame_folder, read_frames, track_faces  # noqa: E402

PHOTO = PHOTOS_DIR / "suzana-sousa-IC1_YWQn6so-unsplash.jpg"  # two faces


def encode(path: Path, images, rate: int = 10, pix_fmt: str = "yuv420p", rotation: float | None = None) -> Path:
    """``images`` (``(H, W, 3)`` uint8 RGB arrays of one size) as an H.264 MP4 at ``rate`` fps;
    ``rotation``: a display matrix saying to turn the frames that many degrees counter-clockwise
    (what ``VideoFrame.rotation`` reads back)."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=rate)
    images = iter(images)
    first = next(images)
    stream.height, stream.width = first.shape[:2]
    stream.pix_fmt = pix_fmt
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for image in (first, *images):
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def make_clip(path: Path, frames: int = 30, rate: int = 10) -> Path:
    """The bundled photo moving 2 px a frame across a grey canvas, as an H.264 MP4 of ``frames``
    frames at ``rate`` fps (both faces stay whole)."""
    photo = Image.open(PHOTO).convert("RGB")

    def canvas(i):
        image = Image.new("RGB", (560, 520), (128, 128, 128))
        image.paste(photo, (2 * i, 10))
        return np.asarray(image)

    return encode(path, (canvas(i) for i in range(frames)), rate)


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


def test_dldl_predict_on_a_clip_gives_one_line_per_track_and_an_annotated_video(tmp_path):
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


def test_a_video_too_small_to_encode_is_annotated_at_2x2_and_the_batch_goes_on(tmp_path):
    """A 1x1 video with --save-dir crashed libx264 ("0x0"), exit 3, and the whole batch was lost."""
    dot = encode(tmp_path / "dot.mp4", [np.full((1, 1, 3), 90, np.uint8)] * 3, pix_fmt="yuv444p")
    clip = make_clip(tmp_path / "clip.mp4", frames=6)
    done = dldl_cli("predict", dot, clip, "--json", "--save-dir", tmp_path / "out")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0] == {"video": str(dot), "track": None, "error": None, "note": "no face found"}
    assert [r["track"] for r in rows[1:]] == [1, 2]
    with av.open(str(tmp_path / "out" / "dot_age.mp4")) as c:
        assert [(f.width, f.height) for f in c.decode(video=0)] == [(2, 2)]  # 2 frames a second: frame 0 of 3 at 10 fps


def test_frames_of_other_sizes_are_fitted_to_the_first(tmp_path):
    """A folder of frames of 64x48, 1x1 and 101x77 pixels: one 64x48 clip, nothing scaled."""
    from dldl.video import VideoWriter

    with VideoWriter(tmp_path / "a.mp4", 2) as w:
        for shape in ((48, 64, 3), (1, 1, 3), (77, 101, 3)):
            w.write(np.full(shape, 200, np.uint8))
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert [(f.width, f.height) for f in c.decode(video=0)] == [(64, 48)] * 3


def fake_predictor(per_frame):
    """A :class:`~dldl.predictor.Predictor` whose detector and model are :class:`BoxesDetector`."""
    from dldl.predictor import Predictor

    estimator = SimpleNamespace(task="age", labels=None, version=None, name="fake", template="utkface")
    predictor = Predictor(estimator)
    predictor.predict = BoxesDetector(per_frame).predict
    return predictor


def test_an_encoder_error_is_one_line_naming_the_video(tmp_path, monkeypatch):
    class Refused:
        @staticmethod
        def from_ndarray(*args, **kwargs):
            raise av.error.ArgumentError(22, "Invalid argument", "avcodec_open2")

    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    monkeypatch.setattr(av, "VideoFrame", Refused)
    with pytest.raises(DataError) as e:
        fake_predictor([[]] * 3).video(clip, every=1, save=tmp_path / "out" / "clip_age.mp4")
    assert str(e.value) == (f"{clip}: cannot write the annotated video {tmp_path / 'out' / 'clip_age.mp4'} "
                            "(Invalid argument: 'avcodec_open2' returned 22)")
    assert list((tmp_path / "out").iterdir()) == []  # no partial file left


def test_a_clip_with_a_rotation_in_its_display_matrix_is_read_upright(tmp_path):
    """A phone clip stores its frames turned and says so in a display matrix; the frames were read
    as stored, so these faces, turned 90 degrees, were not found."""
    upright = np.asarray(Image.open(PHOTO).convert("RGB").crop((0, 0, 500, 440)))
    clip = encode(tmp_path / "portrait.mp4", [np.rot90(upright, 1)] * 4, rotation=-90)  # shown turned 90 degrees clockwise
    frames = list(read_frames(clip, every=1))
    assert [f.image.shape for f in frames] == [(440, 500, 3)] * 4
    assert np.abs(frames[0].image.astype(int) - upright).mean() < 6  # the picture as shot (H.264 changes a little)
    done = dldl_cli("predict", clip, "--json", "--every", "1")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["track"], r["frames"]) for r in rows] == [(1, 4), (2, 4)], done.stdout + done.stderr
    assert rows[0]["box"][0] < 200 < rows[1]["box"][0]  # in the upright frame: the left face, then the right one


def test_a_hard_cut_ends_every_track(tmp_path):
    """Photo A for 6 frames, then photo B whose face stands where A's stood (box overlap 0.9): two
    people, so two tracks (they were one track with the mean of both ages)."""
    a = np.asarray(Image.open(PHOTOS_DIR / "anastasiya-pavlova-v6XumrQC1NA-unsplash.jpg").convert("RGB"))
    b = np.asarray(Image.open(PHOTOS_DIR / "steward-masweneng-Ws4YEqBafus-unsplash.jpg").convert("RGB").crop((80, 36, 480, 436)))
    clip = encode(tmp_path / "cut.mp4", [a] * 6 + [b] * 6)
    frames = list(read_frames(clip, every=2))
    one_box = [[(85.0, 75.0, 290.0, 340.0)]] * len(frames)  # a fake detector: the same box on every frame
    assert [t.frames for t in track_faces(iter(frames), BoxesDetector(one_box))] == [[0, 2, 4], [6, 8, 10]]
    rows = [json.loads(line) for line in dldl_cli("predict", clip, "--json", "--every", "2").stdout.splitlines()]
    assert [(r["track"], r["first_frame"], r["last_frame"]) for r in rows] == [(1, 0, 4), (2, 6, 10)]
    assert rows[0]["age"] < 20 < 30 < rows[1]["age"]  # the girl, then the woman (9.8 and 41.6 as photos)


def test_the_annotated_clip_shows_each_tracks_estimate_on_every_frame_it_spans(tmp_path, monkeypatch):
    """The clip showed each frame's own estimate (jumping from frame to frame, not the number in the
    table) and nothing on a frame where the detector missed a tracked face."""
    import dldl.annotate

    drawn = []

    def record(image, faces, task, numbers=None):
        drawn.append([(n, face.value, tuple(face.box)) for n, face in zip(numbers, faces)])
        return image

    monkeypatch.setattr(dldl.annotate, "annotate_photo", record)
    x = [(float(i), 0.0, i + 40.0, 40.0) for i in range(6)]  # estimated by x: 0, 1, 2, -, 4, 5
    y = (100.0, 0.0, 140.0, 40.0)
    predictor = fake_predictor([[x[0]], [x[1]], [x[2]], [y], [x[4], y], [x[5], y]])
    video = predictor.video(make_clip(tmp_path / "clip.mp4", frames=6), every=1, save=tmp_path / "clip_age.mp4")
    assert [(t.id, t.frames, t.estimate(None)[0]) for t in video.tracks] == [(1, [0, 1, 2, 4, 5], 2.0), (2, [3, 4, 5], 100.0)]
    assert drawn == [[(1, 2.0, x[0])], [(1, 2.0, x[1])], [(1, 2.0, x[2])],
                     [(1, 2.0, x[3]), (2, 100.0, y)],  # missed on frame 3: drawn between its boxes on frames 2 and 4
                     [(1, 2.0, x[4]), (2, 100.0, y)], [(1, 2.0, x[5]), (2, 100.0, y)]]
    with av.open(str(tmp_path / "clip_age.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_a_video_without_a_decodable_frame_is_one_line_with_save_dir(tmp_path):
    """Its header only: no frame, so no annotated clip; the CLI said `error: out/.x_age.mp4.PID.tmp:
    No such file or directory` (a temporary name) and the batch stopped."""
    whole = tmp_path / "whole.mp4"
    out = av.open(str(whole), "w", options={"movflags": "faststart"})  # the header before the frames
    stream = out.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    for packet in [*stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")), *stream.encode()]:
        out.mux(packet)
    out.close()
    data = whole.read_bytes()
    header = tmp_path / "header.mp4"
    header.write_bytes(data[: data.index(b"mdat") + 4])
    assert list(read_frames(header)) == []
    with pytest.raises(DataError) as e:
        fake_predictor([]).video(header, save=tmp_path / "out" / "header_age.mp4")
    assert str(e.value) == f"{header}: no frame could be decoded, so no annotated video {tmp_path / 'out' / 'header_age.mp4'} is written"
    assert list((tmp_path / "out").iterdir()) == []
