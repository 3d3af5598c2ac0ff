"""Videos: frames sampled from a clip (or a folder of frames), faces tracked across frames by box
overlap, and one estimate per track.

Each sampled frame goes through the photo pipeline (:class:`~dldl.predictor.Predictor`). A face
joins the track whose last box overlaps it most (intersection over union at least ``min_iou``);
a track not seen for more than ``max_gap`` sampled frames ends. A track's estimate is read from
the mean of its frames' distributions (its expectation equals the mean of the frames' estimates;
its 5-95% interval is that of the pooled distribution), so one blurred frame cannot decide it.
The annotated clip (:func:`write_annotated`) shows, on each sampled frame, each track's box and
that final estimate, the number of its table row; it reads the sampled frames a second time.

Clips are decoded by PyAV, whose wheels bundle FFmpeg: nothing is downloaded at run time. Each
frame is turned upright as the stream's display matrix says (:func:`rotation`), as players show it.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dldl.data.images import IMAGE_SUFFIXES, MAX_PIXELS, read_image
from dldl.errors import DataError, first_line

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its index in the clip, its time in seconds (``None`` for a folder of
    frames) and its ``(H, W, 3)`` uint8 RGB pixels."""

    index: int
    time: float | None
    image: np.ndarray


def _check_sampling(every: int | None, fps: float | None) -> None:
    if every is not None and fps is not None:
        raise DataError(None, "give --every N or --fps F, not both")
    if every is not None and every < 1:
        raise DataError(None, f"--every {every}: must be a whole number >= 1")
    if fps is not None and not 0 < fps <= 1000:
        raise DataError(None, f"--fps {fps}: must be > 0")


def read_frames(path: str | Path, every: int | None = None, fps: float | None = None) -> Iterator[Frame]:
    """The frames of a video file, upright (:func:`rotation`): every ``every``-th frame, or ``fps``
    frames a second of video time (default: 2 a second).

    Raises:
        DataError: naming the file, when it cannot be opened or decoded, has no video stream, or
            its frames have more than :data:`~dldl.data.images.MAX_PIXELS` pixels.
    """
    import av

    _check_sampling(every, fps)
    if every is None and fps is None:
        fps = 2.0
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found" if not p.exists() else "not a regular file")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(p, f"not a readable video ({first_line(e)})") from None
    with container:
        if not container.streams.video:
            raise DataError(p, "has no video stream")
        stream = container.streams.video[0]
        if stream.width * stream.height > MAX_PIXELS:
            raise DataError(p, f"video frames of {stream.width}x{stream.height} pixels, above the limit of {MAX_PIXELS:,}")
        next_time = 0.0
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / float(stream.average_rate or 25)
                if every is not None:
                    if i % every:
                        continue
                elif t + 1e-6 < next_time:
                    continue
                else:
                    next_time += 1.0 / fps  # type: ignore[operator]
                yield Frame(i, round(t, 3), upright(frame.to_ndarray(format="rgb24"), rotation(frame, stream)))
        except av.error.FFmpegError as e:
            raise DataError(p, f"cannot decode the video ({first_line(e)})") from None


def rotation(frame: Any, stream: Any) -> int:
    """The degrees (0, 90, 180 or 270, counter-clockwise) by which a decoded frame must be turned to
    be seen as its camera meant: phones store a portrait clip as landscape frames and say so in the
    stream's display matrix. PyAV >= 13 reads the matrix (``VideoFrame.rotation``, counter-clockwise);
    older ones fall back on the stream's ``rotate`` tag (clockwise, as older FFmpeg gave it). A
    flip in the matrix is not applied (a mirrored face is still a face, of the same age).

    >>> from types import SimpleNamespace as NS
    >>> rotation(NS(rotation=-90), None), rotation(NS(rotation=-180), None), rotation(NS(), NS(metadata={"rotate": "90"}))
    (270, 180, 270)
    """
    try:
        degrees = frame.rotation if hasattr(frame, "rotation") else -float(stream.metadata.get("rotate", 0))
        return round(degrees / 90) % 4 * 90
    except (ValueError, OverflowError):  # a tag that is not a finite number: as if none
        return 0


def upright(image: np.ndarray, degrees: int) -> np.ndarray:
    """``image`` turned ``degrees`` (a multiple of 90) counter-clockwise, as a contiguous array.

    >>> upright(np.arange(6).reshape(2, 3), 90).tolist()
    [[2, 5], [1, 4], [0, 3]]
    """
    return np.ascontiguousarray(np.rot90(image, degrees // 90)) if degrees % 360 else image


def frame_rate(path: str | Path) -> float | None:
    """The average frame rate of a video file (``None`` when unknown or unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return float(rate) if rate else None


def read_frame_folder(folder: str | Path, every: int | None = None) -> Iterator[Frame]:
    """The images of ``folder``, sorted by name, as the frames of one clip (every ``every``-th)."""
    _check_sampling(every, None)
    files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise DataError(folder, "no image files to use as frames")
    for i, f in enumerate(files):
        if i % (every or 1) == 0:
            yield Frame(i, None, np.asarray(read_image(f)))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    >>> box_iou((0, 0, 1, 1), (2, 2, 3, 3))
    0.0
    """
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One face followed across frames: per sampled frame its index, time, box, estimate and distribution."""

    id: int
    frames: list[int] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    distributions: list[np.ndarray | None] = field(default_factory=list)
    missed: int = 0

    def add(self, frame: Frame, face: Any) -> None:
        self.frames.append(frame.index)
        self.times.append(frame.time)
        self.boxes.append(tuple(face.box))
        self.values.append(face.value)
        self.distributions.append(face.distribution)
        self.missed = 0

    def estimate(self, labels: Any) -> tuple[float, tuple[float, float] | None]:
        """The track's estimate and 5-95% interval, from the mean of its frames' distributions."""
        if any(d is None for d in self.distributions):
            return float(np.median(self.values)), None
        from dldl.labels import quantile

        mean = np.mean(np.stack(self.distributions), 0)[None]
        interval = (float(quantile(mean, labels, 0.05)[0]), float(quantile(mean, labels, 0.95)[0]))
        return float(np.mean(self.values)), interval

    def to_dict(self, video: str, task: str, labels: Any, model: str, version: str | None) -> dict[str, Any]:
        value, interval = self.estimate(labels)
        return {"video": video, "track": self.id, "first_frame": self.frames[0], "last_frame": self.frames[-1],
                "first_time": self.times[0], "last_time": self.times[-1], "frames": len(self.frames),
                task: round(value, 3), "interval_90": None if interval is None else [round(v, 3) for v in interval],
                "box": [round(v, 1) for v in self.boxes[-1]], "model": model, "model_version": version}


CUT_HISTOGRAM = 0.2
"""A shot change needs at least this much change between the grey histograms of two sampled frames:
the share of pixels (0-1) that would have to move to another of 32 grey levels."""
CUT_CORRELATION = 0.3
"""... and at most this correlation (-1 to 1) between their 16x16 grey thumbnails. Both must agree,
so a change of light (histogram only) or of framing (layout only) is not a cut. Measured on the
bundled photos (histogram change, correlation): a cut from one to another 0.23-0.66, -0.08 to 0.06;
light 30% darker 0.44-0.63, 1.0; a pan of a sixth of the frame 0.08-0.14, 0.40-0.46; a 1.25x zoom
0.10-0.17, 0.46-0.53. A pan of a third of the frame or a 2x zoom between two samples may read as a
cut, where the boxes would overlap too little to continue a track anyway. A cut between two shots
of the same light and framing is not seen: box overlap alone decides there, as before."""


def shot_signature(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`is_cut` compares: the 32-level grey histogram (summing to 1) and the 16x16 grey
    thumbnail (zero mean, unit norm; all zeros for a flat frame) of a 64x64 sample of ``image``'s
    pixels: a few microseconds a frame, whatever its size."""
    h, w = image.shape[:2]
    sample = image[np.linspace(0, h - 1, 64).astype(int)][:, np.linspace(0, w - 1, 64).astype(int)]
    grey = sample[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    histogram = np.bincount(np.minimum(grey.astype(int) // 8, 31).ravel(), minlength=32) / grey.size
    thumb = grey.reshape(16, 4, 16, 4).mean((1, 3))
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return histogram, thumb / norm if norm > 1e-3 else thumb * 0


def is_cut(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether the shot changes between two sampled frames (their :func:`shot_signature`): their
    grey histograms differ by at least :data:`CUT_HISTOGRAM` and their layouts correlate at most
    :data:`CUT_CORRELATION`.

    >>> dark, light = np.zeros((48, 64, 3), np.uint8), np.full((48, 64, 3), 200, np.uint8)
    >>> left = np.concatenate([dark[:, :32], light[:, 32:]], 1)
    >>> is_cut(shot_signature(dark), shot_signature(light)), is_cut(shot_signature(left), shot_signature(left[:, ::-1]))
    (True, False)
    """
    change = 0.5 * float(np.abs(before[0] - after[0]).sum())
    return change >= CUT_HISTOGRAM and float((before[1] * after[1]).sum()) <= CUT_CORRELATION


def track_faces(frames: Iterator[Frame], predictor: Any, min_iou: float = 0.3, max_gap: int = 2,
                on_frame: Any = None) -> list[Track]:
    """Detect and estimate the faces of each frame with ``predictor`` and link them into tracks
    (greedy, by the highest box overlap first). At a shot change (:func:`is_cut`, between two
    sampled frames) every track ends: a track never joins two shots, even where a face of the new
    shot stands where one of the old stood. ``on_frame(frame, faces, track_ids)`` is called for
    each frame (e.g. to write an annotated video). Tracks are numbered from 1 in order of
    appearance."""
    tracks: list[Track] = []
    active: list[Track] = []
    shot = None
    for frame in frames:
        if isinstance(frame.image, np.ndarray):
            shot, previous = shot_signature(frame.image), shot
            if previous is not None and is_cut(previous, shot):
                active = []
        faces = predictor.predict(frame.image)
        pairs = sorted(((box_iou(t.boxes[-1], f.box), ti, fi) for ti, t in enumerate(active) for fi, f in enumerate(faces)),
                       reverse=True)
        owner: dict[int, Track] = {}
        used: set[int] = set()
        for overlap, ti, fi in pairs:
            if overlap < min_iou:
                break
            if ti in used or fi in owner:
                continue
            owner[fi] = active[ti]
            used.add(ti)
        for fi, face in enumerate(faces):
            if fi not in owner:
                owner[fi] = Track(len(tracks) + 1)
                tracks.append(owner[fi])
                active.append(owner[fi])
            owner[fi].add(frame, face)
        for t in active:
            if t.frames[-1] != frame.index:
                t.missed += 1
        active = [t for t in active if t.missed <= max_gap]
        if on_frame is not None:
            on_frame(frame, faces, [owner[fi].id for fi in range(len(faces))])
    return tracks


@dataclass(frozen=True)
class TrackMark:
    """What the annotated clip shows of one track on one frame: the track's box there and the
    track's own estimate and 5-95% interval (the numbers of its table row and JSON line)."""

    track: int
    box: tuple[float, float, float, float]
    value: float
    interval: tuple[float, float] | None


def frame_marks(index: int, tracks: Sequence[Track], estimates: dict[int, tuple[float, Any]]) -> list[TrackMark]:
    """The :class:`TrackMark` of every track whose first to last frame holds frame ``index``: its
    box as detected there, or, on a frame where the detector missed it (within ``max_gap``), the
    box drawn between its boxes on the frames before and after. ``estimates``: each track's
    ``(value, interval)`` by id (:meth:`Track.estimate`).

    >>> t = Track(1, frames=[0, 4], boxes=[(0.0, 0.0, 10.0, 10.0), (8.0, 0.0, 18.0, 10.0)])
    >>> frame_marks(2, [t], {1: (30.0, None)})
    [TrackMark(track=1, box=(4.0, 0.0, 14.0, 10.0), value=30.0, interval=None)]
    >>> frame_marks(5, [t], {1: (30.0, None)})
    []
    """
    marks = []
    for t in tracks:
        if not t.frames[0] <= index <= t.frames[-1]:
            continue
        j = bisect.bisect_left(t.frames, index)
        if t.frames[j] == index:
            box = t.boxes[j]
        else:
            w = (index - t.frames[j - 1]) / (t.frames[j] - t.frames[j - 1])
            box = tuple((1 - w) * a + w * b for a, b in zip(t.boxes[j - 1], t.boxes[j]))
        marks.append(TrackMark(t.id, box, *estimates[t.id]))  # type: ignore[arg-type]
    return marks


def write_annotated(path: str | Path, frames: Iterator[Frame], tracks: Sequence[Track], labels: Any, task: str,
                    fps: float, source: str | Path | None = None) -> None:
    """The annotated clip of ``tracks`` into ``path`` (an H.264 MP4 at ``fps``, written atomically):
    ``frames`` (the sampled frames, read again: a second pass) each with every track it holds
    (:func:`frame_marks`), labelled with the track's final estimate, as in the table. The final
    estimate needs all of a track's frames before its first is drawn; reading the clip twice costs
    a second decoding, where keeping the frames would cost their memory (a minute at 2 frames a
    second of 1080p is 720 MB).

    Raises:
        DataError: naming ``source``, when the clip cannot be encoded.
    """
    from PIL import Image

    from dldl.annotate import annotate_photo
    from dldl.files import atomic_path

    estimates = {t.id: t.estimate(labels) for t in tracks}
    with atomic_path(path) as tmp, VideoWriter(tmp, fps, source, path) as writer:
        for frame in frames:
            marks = frame_marks(frame.index, tracks, estimates)
            writer.write(np.asarray(annotate_photo(Image.fromarray(frame.image), marks, task, [m.track for m in marks])))


class VideoWriter:
    """Annotated frames into an H.264 MP4 (``with VideoWriter(path, fps) as w: w.write(rgb)``).

    The clip takes the size of its first frame, each side made even as yuv420p needs: an odd side
    loses its last row or column, and a side of 1 pixel is padded to 2 (so a 1x1 video gives a 2x2
    clip instead of an encoder error). A later frame of another size is cropped or padded (black)
    to that size, never scaled, so the boxes drawn on it stay in place. A clip without frames is
    refused when closed (a :class:`DataError` naming ``source``), not left missing.
    """

    def __init__(self, path: str | Path, fps: float, source: str | Path | None = None,
                 target: str | Path | None = None) -> None:
        import av

        self.path, self.fps, self.av = Path(path), fps, av
        self.source, self.target = source, target or path  # named in errors: the video annotated, the clip's final path
        self.stream = None
        with self._errors():
            self.container = av.open(str(path), mode="w", format="mp4")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """An encoder or muxer error as one :class:`DataError` line naming the video annotated."""
        try:
            yield
        except self.av.error.FFmpegError as e:
            raise DataError(self.source, f"cannot write the annotated video {self.target} ({first_line(e)})") from None

    def write(self, image: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame (fitted to the clip's size, see the class)."""
        with self._errors():
            if self.stream is None:
                from fractions import Fraction

                h, w = (max(2, side // 2 * 2) for side in image.shape[:2])  # yuv420p needs even sides
                self.stream = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
                self.stream.width, self.stream.height, self.stream.pix_fmt = w, h, "yuv420p"
            frame = self.av.VideoFrame.from_ndarray(fit_frame(image, self.stream.height, self.stream.width), format="rgb24")
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # after an error: no flush, and a failing close does not hide the error
            with contextlib.suppress(self.av.error.FFmpegError):
                self.container.close()
            return
        with self._errors():
            try:
                if self.stream is not None:
                    for packet in self.stream.encode():
                        self.container.mux(packet)
            finally:
                self.container.close()
        if self.stream is None:  # FFmpeg writes no file for a clip without frames
            raise DataError(self.source, f"no frame could be decoded, so no annotated video {self.target} is written")


def fit_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` cropped or padded with black (at the bottom and right) to ``height`` x ``width``.

    >>> fit_frame(np.full((1, 1, 3), 7, np.uint8), 2, 2)[:, :, 0].tolist()
    [[7, 0], [0, 0]]
    >>> fit_frame(np.zeros((5, 7, 3), np.uint8), 4, 6).shape
    (4, 6, 3)
    """
    part = image[:height, :width]
    if part.shape[:2] == (height, width):
        return np.ascontiguousarray(part)
    out = np.zeros((height, width, 3), np.uint8)
    out[: part.shape[0], : part.shape[1]] = part
    return out
