"""The photo pipeline: any source -> faces -> estimates, as results.

``dldl.pipeline("age")`` gives the :class:`Predictor` of a task's default model (one table:
:data:`TASKS`). A predictor takes any source (a path, a folder, a glob, a list, a PIL image, an
``(H, W, 3)`` array, uploaded bytes) and streams one :class:`~dldl.results.PhotoResult` per photo
through three steps: preprocess (:meth:`Predictor.load`: decode, EXIF rotation, RGB), inference
and postprocess (:meth:`Predictor.predict`: detect, align to the model's crop template, estimate;
intervals, flags, percentiles). A video is followed face by face into tracks
(:meth:`Predictor.video`). ``dldl predict``, ``dldl serve`` and ``dldl.predict`` are thin shells
over it.

>>> sorted(TASKS)
['age', 'beauty']
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dldl.data.images import IMAGE_SUFFIXES, MAX_PIXELS, WORKING_PIXELS, read_photo, square_resize, upright_rgb
from dldl.errors import DataError, DldlError
from dldl.results import FacePrediction, PhotoResult, VideoResult, face_flags, percentile_of
from dldl.runtime import Estimator

if TYPE_CHECKING:  # the detector is imported when a photo is first predicted, not at start-up
    from dldl.faces import Face

TASKS = {"age": "mobilenet_v2-age", "beauty": "mobilenet_v2-beauty"}
"""The default model of each task: what ``dldl predict``, ``dldl serve``, ``dldl.predict`` and
:func:`pipeline` use unless given another."""


def default_model(task: str) -> str:
    """The default model of ``task``, or one :class:`~dldl.errors.DldlError` line naming the tasks.

    >>> default_model("age")
    'mobilenet_v2-age'
    >>> default_model("height")
    Traceback (most recent call last):
    dldl.errors.DldlError: unknown task 'height'; use one of age, beauty
    """
    if task not in TASKS:
        raise DldlError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return TASKS[task]


MIN_CROP_SIDE = 20  # a given face crop smaller than this is refused (the detector's smallest face, min_size)


def expand_paths(paths: Iterable[str | os.PathLike], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Files as given, folders searched recursively for files with ``suffixes`` (symbolic links to
    folders are not followed; broken or looping links to files are kept so they are reported), and
    globs the shell did not expand."""
    files: list[Path] = []
    for item in paths:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and (f.is_file() or f.is_symlink()))
        elif not p.exists() and any(c in text for c in "*?["):
            files += sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
        else:
            files.append(p)
    return files


def _is_source_list(source: Any) -> bool:
    return isinstance(source, (list, tuple)) or (isinstance(source, Iterator) and not isinstance(source, (str, bytes)))


class Predictor:
    """Photo -> faces -> estimates: detect faces, align each to the model's crop template, predict.

    Args:
        estimator: a loaded model (``dldl.load(...)``); its ``name`` is what results report.
        detector: a face detector (``dldl.faces.get_detector()``); ``None`` treats every input as an
            already aligned face crop.
        template: the alignment template; default: the model's own (``estimator.template``, from
            its spec), i.e. the geometry of the crops it was trained on.
        tta_flip: average over the crop and its mirror image; ``None``: the model's own setting
            (its spec's ``tta_flip``).
        max_pixels: photos with more pixels are refused before decoding (a decompression bomb).

    A predictor may be shared between threads: one photo goes through it at a time.
    """

    def __init__(self, estimator: Estimator, detector: Any | None = None, template: str | None = None,
                 tta_flip: bool | None = None, max_pixels: int = MAX_PIXELS) -> None:
        self.estimator = estimator
        self.detector = detector
        self.template = template or estimator.template
        self.tta_flip = tta_flip
        self.max_pixels = max_pixels
        self._detect_lock = threading.Lock()  # each network is used by one thread at a time, so that
        self._estimate_lock = threading.Lock()  # one photo's detection may overlap another's estimate (stream)

    @property
    def model(self) -> str:
        """The model's name as results report it."""
        return str(self.estimator.name or "model")

    # -- 1. preprocess: any source to (name, RGB array, scale)
    def load(self, source: Any, name: str | None = None, bgr: bool = False) -> tuple[str, np.ndarray, float]:
        """One photo as ``(name, (H, W, 3) uint8 RGB array, scale)``, from a path, a PIL image, an
        array (RGB, or BGR with ``bgr``), bytes or a binary file object (an upload). A file over
        :data:`~dldl.data.images.WORKING_PIXELS` is decoded smaller; ``scale`` is the photo's pixels
        per pixel of the array (1.0 for arrays and PIL images, which are used as given).

        Raises:
            DataError: a file or upload that cannot be read, or over ``max_pixels``, naming it;
                ValueError: an array that is not ``(H, W, 3)`` uint8.
        """
        if isinstance(source, (str, os.PathLike)):
            image, scale = read_photo(source, self.max_pixels, WORKING_PIXELS)
            return name or os.fspath(source), np.asarray(image), scale
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(source)
        if hasattr(source, "read"):  # an upload: decoded from a temporary file with the same checks as a path
            label = name or getattr(source, "name", None) or "<upload>"
            with tempfile.NamedTemporaryFile(prefix="dldl-upload-") as tmp:
                while block := source.read(1 << 20):
                    tmp.write(block)
                tmp.flush()
                try:
                    image, scale = read_photo(tmp.name, self.max_pixels, WORKING_PIXELS)
                except DataError as e:
                    raise DataError(label, e.problem.replace(tmp.name, label)) from None
                return label, np.asarray(image), scale
        if hasattr(source, "convert") and hasattr(source, "size"):  # a PIL image
            return name or "<image>", np.asarray(upright_rgb(source)), 1.0
        array = np.asarray(source)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"an image array must be (H, W, 3) uint8, got {array.dtype} {array.shape}")
        return name or "<image>", np.ascontiguousarray(array[:, :, ::-1] if bgr else array), 1.0

    # -- 2. inference (detect, then align and estimate) and 3. postprocess: one array to faces
    def detect(self, image: np.ndarray) -> list[Face] | None:
        """The faces the detector finds in ``image`` ``(H, W, 3)`` uint8 RGB, largest first; ``None``
        when there is no detector (the image is one aligned face crop)."""
        if self.detector is None:
            return None
        with self._detect_lock:
            return self.detector.detect(image)

    def predict(self, image: np.ndarray, faces: list[Face] | None = None) -> list[FacePrediction]:
        """``(H, W, 3)`` uint8 RGB photo (or crop) -> one :class:`FacePrediction` per face, largest first.
        ``faces``: what :meth:`detect` found in ``image``, when it was called already.

        Raises:
            DataError: (without a file name) a crop, when there is no detector, smaller than
                :data:`MIN_CROP_SIDE` on a side.
        """
        from PIL import Image

        from dldl.faces import aligned_crop

        size = self.estimator.cache_size
        if faces is None:
            faces = self.detect(image)
        if faces is None:
            h, w = image.shape[:2]
            if min(h, w) < MIN_CROP_SIDE:
                raise DataError(None, f"image is {w}x{h} pixels, too small for a face crop "
                                      f"(at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE})")
            found = [(None, square_resize(Image.fromarray(image), size), (0.0, 0.0, float(w), float(h)))]
        else:
            found = [(face, aligned_crop(image, face, self.template, size), face.box) for face in faces]
        if not found:
            return []
        with self._estimate_lock:
            pred = self.estimator.predict_arrays(np.stack([c for _, c, _ in found]), self.tta_flip)
        intervals = pred.interval()
        predictions = [FacePrediction(box, None if face is None else face.landmarks, None if face is None else face.score,
                                      float(pred.estimate[i]), None if intervals is None else tuple(map(float, intervals[i])),
                                      None if pred.distribution is None else pred.distribution[i], crop)
                       for i, (face, crop, box) in enumerate(found)]
        reference = self.estimator.meta.get("reference_quantiles")
        return [dataclasses.replace(f, flags=face_flags(f, self.estimator.spec),
                                    percentile=None if reference is None else percentile_of(f.value, reference))
                for f in predictions]

    def result(self, image: np.ndarray, path: str, scale: float = 1.0, found: list[Face] | None = None) -> PhotoResult:
        """:meth:`predict` on ``image`` (``found``: its faces from :meth:`detect`, when detected already) as
        the :class:`PhotoResult` of ``path``; boxes and landmarks are multiplied by ``scale`` (the
        photo's pixels per pixel of ``image``), so they are the photo's."""
        faces = self.predict(image, found)
        if scale != 1.0:
            faces = [dataclasses.replace(f, box=tuple(v * scale for v in f.box),
                                         landmarks=None if f.landmarks is None else f.landmarks * scale) for f in faces]
            faces = [dataclasses.replace(f, flags=face_flags(f, self.estimator.spec)) for f in faces]
        return PhotoResult(path, faces, self.estimator.task, self.model, self.estimator.labels,
                           model_version=self.estimator.version, image=image, image_scale=scale,
                           model_sha256=self.estimator.meta.get("sha256"))

    def error(self, path: str, problem: str) -> PhotoResult:
        """The :class:`PhotoResult` of a photo that could not be read: no faces, one error line."""
        return PhotoResult(path, [], self.estimator.task, self.model, error=problem, model_version=self.estimator.version,
                           model_sha256=self.estimator.meta.get("sha256"))

    def __call__(self, source: Any, name: str | None = None, bgr: bool = False) -> PhotoResult:
        """One photo (anything :meth:`load` takes) -> its :class:`PhotoResult`.

        Raises:
            DataError: it cannot be read (one line naming it); ValueError: an array of another shape.
        """
        path, image, scale = self.load(source, name, bgr)
        return self.result(image, path, scale)

    def stream(self, sources: Any, bgr: bool = False) -> Iterator[PhotoResult]:
        """Every photo of ``sources`` (a path, folder or glob, a PIL image, an array, bytes, or a
        list or iterator of them) -> its :class:`PhotoResult`, in order. A photo that cannot be read
        gives a result whose ``error`` names it; the others go on.

        While one photo is aligned and estimated, the next is read and searched for faces in a
        second thread: the two networks run side by side, each on one core (notebook §8,
        docs/notebook/2026-12-07-photo-speed.md).
        """
        from concurrent.futures import ThreadPoolExecutor

        items = list(sources) if _is_source_list(sources) else [sources]
        photos = (photo for item in items
                  for photo in (expand_paths([item]) if isinstance(item, (str, os.PathLike)) else [item]))
        with ThreadPoolExecutor(1, thread_name_prefix="dldl-detect") as pool:
            pending = None
            for photo in photos:
                job = pool.submit(self._read_and_detect, photo, bgr)
                if pending is not None:
                    yield self._caught(*pending)
                pending = (photo, None, lambda job=job: self.result(*job.result()))
            if pending is not None:
                yield self._caught(*pending)

    def _read_and_detect(self, source: Any, bgr: bool) -> tuple[np.ndarray, str, float, list[Face] | None]:
        """:meth:`load` then :meth:`detect`: the arguments of :meth:`result`."""
        path, image, scale = self.load(source, None, bgr)
        return image, path, scale, self.detect(image)

    def safe(self, source: Any, name: str | None = None, bgr: bool = False) -> PhotoResult:
        """One photo (anything :meth:`load` takes, named ``name``) -> its :class:`PhotoResult`; a
        photo that cannot be read gives a result whose ``error`` names it instead of an exception."""
        return self._caught(source, name, lambda: self(source, name, bgr))

    def _caught(self, source: Any, name: str | None, run: Any) -> PhotoResult:
        """``run()``'s result, or, when it raises :class:`DataError`, the error result naming ``source``."""
        label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<image>")
        try:
            return run()
        except DataError as e:  # one line naming the file; the other photos continue
            return self.error(label, f"{label}: {getattr(e, 'problem', e)}")

    def video(self, source: str | Path, every: int | None = None, fps: float | None = None, frames: bool = False,
              save: str | Path | None = None) -> VideoResult:
        """A video file (or, with ``frames``, a folder of frames sorted by name) -> its faces
        followed across the sampled frames (every ``every``-th frame, or ``fps`` a second; default
        2 a second) as a :class:`VideoResult`; ``save``: an annotated MP4 of the sampled frames,
        each face labelled with its track's estimate (the clip is read a second time for it).

        Raises:
            DataError: the video cannot be read, or its annotated MP4 cannot be encoded, naming it.
        """
        from dldl.video import frame_rate, read_frame_folder, read_frames, track_faces, write_annotated

        def sampled() -> Iterator[Any]:
            return read_frame_folder(source, every) if frames else read_frames(source, every, fps)

        tracks = track_faces(sampled(), self)
        task, labels = self.estimator.task, self.estimator.labels
        if save is not None:
            rate = (fps or 2.0) if frames or fps or not every else (frame_rate(source) or 25.0) / every
            write_annotated(save, sampled(), tracks, labels, task, rate, source)
        return VideoResult(str(source), tracks, task, self.model, labels, self.estimator.version)


_PIPELINES: dict[tuple, Predictor] = {}
_PIPELINES_LOCK = threading.Lock()


def pipeline(task: str = "age", model: str | os.PathLike | None = None, device: str = "cpu", runtime: str = "auto",
             crops: bool = False, min_score: float = 0.7, min_face_size: float = 20.0, tta: bool | None = None,
             cache: bool = True, threads: int | None = 1) -> Predictor:
    """The :class:`Predictor` of ``task`` (its default model from :data:`TASKS`, or ``model``: a
    shipped name, a checkpoint, a run folder or an exported file) with the default face detector
    keeping faces scored at least ``min_score`` and at least ``min_face_size`` px wide (``crops``:
    no detector, every input is an aligned face crop). With ``cache`` the predictor is made once
    per set of arguments and shared (safely across threads). ``threads``: ONNX Runtime's threads
    for the model (``None``: one per core). One by default: a photo's few faces take less CPU, and
    no more time, on one thread than on two, and :meth:`Predictor.stream` detects the next photo
    on the other core meanwhile; a photo of 20 faces or more is estimated faster with more
    (docs/BENCHMARKS.md).

    Raises:
        DldlError: an unknown task, model or runtime, or bad detector settings (one line).
    """
    from dldl.hub import load

    model = default_model(task) if model is None else model
    if not 0 <= min_score <= 1:
        raise DldlError(f"min_score {min_score}: must be in [0, 1]")
    if not 0 <= min_face_size < 100_000:
        raise DldlError(f"min_face_size {min_face_size}: must be >= 0 (pixels)")
    key = (os.fspath(model), device, runtime, crops, min_score, min_face_size, tta, threads)
    with _PIPELINES_LOCK:
        if cache and key in _PIPELINES:
            return _PIPELINES[key]
        detector = None
        if not crops:
            from dldl.faces import get_detector

            detector = get_detector(min_score=min_score, min_size=min_face_size)
        predictor = Predictor(load(model, device, runtime, threads), detector, tta_flip=tta)
        if cache:
            _PIPELINES[key] = predictor
        return predictor


def predict(images: Any, task: str = "age", model: str | None = None, distribution: bool = False, bgr: bool = False,
            min_score: float = 0.7, min_face_size: float = 20.0, tta: bool | None = None, device: str = "cpu"
            ) -> dict[str, Any] | list[dict[str, Any]]:
    """Every face in a photo, in one call: ``dldl.predict("party.jpg")``.

    Args:
        images: a path, a ``PIL.Image``, an ``(H, W, 3)`` uint8 array (RGB, or BGR as OpenCV gives
            with ``bgr=True``), bytes, or a list of them.
        task: ``"age"`` or ``"beauty"``: picks the shipped model (``model`` overrides it).
        model: a shipped model name, a checkpoint, a run folder or an exported file.
        distribution: add each face's ``{"labels", "probs"}``.
        min_score, min_face_size: the detector keeps faces scored at least ``min_score`` and at
            least ``min_face_size`` px wide.
        tta: flip test-time augmentation; default: the model's own setting (its spec's ``tta_flip``).

    Returns:
        what ``dldl predict --json`` gives for each photo (:meth:`PhotoResult.to_dict`); a list for
        a list, where a photo that cannot be read has its one-line ``error`` and the others go on.
        The model and the detector are loaded once and kept for later calls (from any thread).

    Raises:
        DataError: a single path that cannot be read (one line naming it); ValueError: an array
        that is not ``(H, W, 3)`` uint8.
    """
    predictor = pipeline(task, model, device, min_score=min_score, min_face_size=min_face_size, tta=tta)
    if isinstance(images, (list, tuple)):
        return [r.to_dict(distribution) for r in predictor.stream(images, bgr)]
    return predictor(images, bgr=bgr).to_dict(distribution)
