"""What the photo pipeline gives back, and how it renders itself.

A :class:`PhotoResult` is one photo: its faces (:class:`FacePrediction`) or the one-line error
that stopped it. It renders itself as JSON (:meth:`~PhotoResult.to_dict`: ``dldl predict --json``,
``dldl.predict``, ``POST /v1/predict``), CSV rows, table rows, an annotated picture
(:meth:`~PhotoResult.plot`, :meth:`~PhotoResult.save`) and a :meth:`~PhotoResult.summary`; a
:class:`VideoResult` is one video's face tracks. Every field is defined once, in :data:`FIELDS`:
the JSON keys, the CSV columns and the server's OpenAPI schema all come from it. Each face carries
:data:`FLAGS` when its estimate is not to be trusted.

>>> [f.name for f in FIELDS if f.level == "photo"]
['path', 'task', 'model', 'model_version', 'scale', 'faces', 'error', 'model_sha256']
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dldl.annotate import interval_text
from dldl.errors import DldlError
from dldl.labels import LabelSet
from dldl.models.spec import ModelSpec


@dataclass(frozen=True)
class Field:
    """One field of a result: its ``name`` (the JSON key, the CSV column, the OpenAPI property),
    ``level`` (``"photo"`` or ``"face"``), Python ``type`` and ``description``; ``when`` says when
    it is present (``None``: always)."""

    name: str
    level: str
    type: Any
    description: str
    when: str | None = None


ESTIMATE = "{task}"
"""The name of the estimate's field: the task's own name (``age``, ``beauty``)."""

FIELDS = (
    Field("path", "photo", str | None, "the photo's path (or the upload's name, or '<image>')"),
    Field("task", "photo", str | None, "age or beauty"),
    Field("model", "photo", str | None, "the model's shipped name or file"),
    Field("model_version", "photo", str | None, "the first 12 hex digits of the model file's sha256"),
    Field("scale", "photo", list[float] | None, "the model's label range [low, high]: years for age, the raters' scale for beauty"),
    Field("faces", "photo", list, "the faces found, largest first"),
    Field("error", "photo", str | None, "why the photo could not be read (one line naming it), else null"),
    Field("face", "face", int, "the face's number, from 1 (as in the table and the annotated photo)"),
    Field("box", "face", list[float], "x0, y0, x1, y1 in photo pixels"),
    Field("landmarks", "face", list[list[float]] | None, "five points (eyes, nose, mouth corners) in photo pixels; null for a given crop"),
    Field("score", "face", float | None, "the detector's score, 0-1; null for a given crop"),
    Field(ESTIMATE, "face", float, "the estimate, named after the task: age in years, or the beauty score"),
    Field("interval_90", "face", list[float] | None, "the 5-95% interval of the predicted distribution"),
    Field("flags", "face", list[str], "why the estimate is not to be trusted (see FLAGS); empty if none"),
    Field("percentile", "face", float | None, "the estimate's percentile among the model's training faces",
          when="models whose card holds reference estimates (beauty)"),
    Field("distribution", "face", dict | None, "{labels, probs}: the predicted distribution",
          when="on request (--distribution, distribution=True; always from the server)"),
    # last, so that the columns and keys before it keep their places in CSV files and JSON written before it
    Field("model_sha256", "photo", str | None, "the model file's full sha256 (model_version is its first 12 hex digits)"),
)
"""Every field of a result, in order: one definition for the JSON, the CSV, the table and the
server's schema."""


def field_names(task: str, level: str | None = None) -> list[str]:
    """The names of :data:`FIELDS` for ``task`` (the estimate named after it), of one ``level``
    or all; ``faces`` (the container of the face fields) is left out when all are asked for.

    >>> field_names("beauty", "face")[:6]
    ['face', 'box', 'landmarks', 'score', 'beauty', 'interval_90']
    """
    chosen = [f for f in FIELDS if f.level == level] if level else [f for f in FIELDS if f.name != "faces"]
    return [f.name.format(task=task) for f in chosen]


def _cell(value: Any) -> Any:
    """A CSV cell: a number or text as it is, a list or mapping as JSON, ``None`` as empty."""
    if value is None:
        return ""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return value


NO_FACE = "no face found"
"""The ``error`` of a photo's one row (CSV, Parquet) when it was read but holds no face."""


@dataclass
class FacePrediction:
    """One face found in a photo: where it is and what the model estimates.

    ``box`` is ``(x0, y0, x1, y1)`` and ``landmarks`` ``(5, 2)`` in photo pixels (``None`` for a
    given crop); ``value`` the estimate (age in years or beauty score), ``interval`` its 5-95%
    interval from the predicted distribution, ``distribution`` the ``(K,)`` distribution.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    score: float | None
    value: float
    interval: tuple[float, float] | None
    distribution: np.ndarray | None
    crop: np.ndarray
    flags: tuple[str, ...] = ()
    percentile: float | None = None  # of ``value`` among the model's estimates on its training faces

    def to_dict(self, task: str) -> dict[str, Any]:
        """The face's fields of :data:`FIELDS` but its number and distribution (``percentile``
        only when the model gives one)."""
        out = {"box": [round(v, 1) for v in self.box],
               "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist(),
               "score": None if self.score is None else round(self.score, 3), task: round(self.value, 3),
               "interval_90": None if self.interval is None else [round(v, 3) for v in self.interval],
               "flags": list(self.flags)}
        if self.percentile is not None:
            out["percentile"] = round(self.percentile, 1)
        return out


@dataclass
class PhotoResult:
    """One photo through the pipeline: its faces (largest first), or the one-line ``error`` that
    stopped it. It renders itself as JSON (:meth:`to_dict`, :meth:`to_json`), CSV rows, table rows,
    an annotated picture (:meth:`plot`, :meth:`save`) and a one-line :meth:`summary`.

    ``image`` is the decoded ``(H, W, 3)`` uint8 photo, kept for :meth:`plot` (``None`` after an error).
    """

    path: str
    faces: list[FacePrediction]
    task: str
    model: str
    labels: LabelSet | None = None
    error: str | None = None
    model_version: str | None = None
    image: np.ndarray | None = dataclasses.field(default=None, repr=False)
    image_scale: float = dataclasses.field(default=1.0, repr=False)  # the photo's pixels per pixel of ``image``
    model_sha256: str | None = None

    def to_dict(self, distribution: bool = False) -> dict[str, Any]:
        """JSON-ready, the fields of :data:`FIELDS` in order: ``{"path", "task", "model",
        "model_version", "scale", "faces", "error", "model_sha256"}``; each face as :meth:`FacePrediction.to_dict`
        after its number ``"face"`` (from 1), with ``"distribution": {"labels", "probs"}`` when asked.
        ``scale`` is the model's label range ``[low, high]`` (years for age; the raters' scale for
        beauty); ``model_version`` the first 12 hex digits of the model file's sha256."""
        values = None if self.labels is None else [round(v, 4) for v in self.labels.values().tolist()]
        faces = []
        for number, face in enumerate(self.faces, 1):  # numbered from 1, as in the table, the CSV and the pictures
            d = {"face": number, **face.to_dict(self.task)}
            if distribution:
                d["distribution"] = None if face.distribution is None or values is None else {
                    "labels": values, "probs": np.round(face.distribution, 5).tolist()}
            faces.append(d)
        scale = None if self.labels is None else [round(self.labels.start, 4), round(self.labels.stop, 4)]
        return {"path": self.path, "task": self.task, "model": self.model, "model_version": self.model_version,
                "scale": scale, "faces": faces, "error": self.error, "model_sha256": self.model_sha256}

    def to_json(self, distribution: bool = False) -> str:
        """:meth:`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict(distribution))

    def records(self, distribution: bool = False) -> list[dict[str, Any]]:
        """One flat record per face, keyed by :func:`field_names` (the photo's fields repeated on
        each, a field a face lacks as ``None``), values as in :meth:`to_dict`; a photo without a
        face gets one record whose ``error`` says why (:data:`NO_FACE` when it was read). The rows
        of the CSV (:meth:`csv_rows`) and of Parquet (:mod:`dldl.parquet`)."""
        d = self.to_dict(distribution)
        photo = {k: v for k, v in d.items() if k != "faces"}
        faces = d["faces"] or [{}]
        if not d["faces"] and photo["error"] is None:
            photo["error"] = NO_FACE
        names = field_names(self.task)
        return [{name: {**photo, **face}.get(name) for name in names} for face in faces]

    def csv_rows(self, distribution: bool = False) -> list[list[Any]]:
        """One row per face (:meth:`records`), in the columns of :func:`field_names`
        (``csv_header``), lists as JSON text; a photo without a face gets one row whose ``error`` says why."""
        return [[_cell(value) for value in record.values()] for record in self.records(distribution)]

    def table_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """``(file, face, box, estimate, 5-95% interval, note)`` per face, or one row with the
        error (or "no face found") as its note; file names as given, not markup."""
        file = Path(self.path).name
        if self.error or not self.faces:
            return [(file, "", "", "", "", (self.error or NO_FACE).removeprefix(f"{self.path}: "))]
        rows = []
        for number, face in enumerate(self.faces, 1):
            value = f"{face.value:.1f}" + (f" ({ordinal(round(face.percentile))} pct.)" if face.percentile is not None else "")
            interval = interval_text(face.interval, self.task)
            rows.append((file, str(number), " ".join(f"{round(v, 1):.0f}" for v in face.box), value, interval,
                         ", ".join(face.flags).replace("_", " ")))
        return rows

    def summary(self) -> str:
        """One line: the photo's name and each face's estimate, or why there is none.

        >>> PhotoResult("a/x.jpg", [], "age", "m", error="a/x.jpg: empty file (0 bytes)").summary()
        'x.jpg: a/x.jpg: empty file (0 bytes)'
        """
        name = Path(self.path).name
        if self.error or not self.faces:
            return f"{name}: {self.error or NO_FACE}"
        return f"{name}: " + ", ".join(f"face {i} {self.task} {f.value:.1f}" for i, f in enumerate(self.faces, 1))

    def plot(self) -> Any:
        """The photo with each face's box and numbered estimate drawn on it (a PIL image)."""
        from PIL import Image

        from dldl.annotate import annotate_photo

        if self.image is None:
            raise DldlError(f"{self.path}: no picture to draw ({self.error or 'the photo was not kept'})")
        faces = self.faces if self.image_scale == 1.0 else [  # boxes are the photo's; the kept image may be smaller
            dataclasses.replace(f, box=tuple(v / self.image_scale for v in f.box)) for f in self.faces]
        return annotate_photo(Image.fromarray(self.image), faces, self.task)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`plot` to ``path`` as a JPEG, atomically."""
        from dldl.files import write_atomic

        return write_atomic(path, self.plot().save, "JPEG", quality=90)


def csv_header(task: str) -> list[str]:
    """The columns of :meth:`PhotoResult.csv_rows`: every field of :data:`FIELDS` but ``faces``."""
    return field_names(task)


def summarize(results: list[PhotoResult]) -> list[str]:
    """Lines that sum up many photos: counts, the estimates' median and range, the first errors."""
    if not results:
        return ["no photos"]
    task, model = results[0].task, results[0].model
    faces = [f for r in results for f in r.faces]
    failed = [r for r in results if r.error]
    flagged = sum(1 for f in faces if f.flags)
    lines = [f"{len(results)} photos, {len(faces)} faces ({flagged} flagged), "
             f"{sum(1 for r in results if not r.faces and not r.error)} photos without a face, "
             f"{len(failed)} could not be read ({model})"]
    if faces:
        values = np.array([f.value for f in faces])
        lines.append(f"{task}: median {np.median(values):.1f}, range {values.min():.1f}-{values.max():.1f}")
    lines += [f"  {r.error}" for r in failed[:5]]
    if len(failed) > 5:
        lines.append(f"  ... and {len(failed) - 5} more")
    lines.append("every face: --table, --json or --csv FILE")
    return lines


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd``.

    >>> [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 22, 100)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '22nd', '100th']
    """
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def percentile_of(value: float, quantiles: np.ndarray | list[float]) -> float:
    """Where ``value`` falls among a reference set summarised by its ``(101,)`` quantiles (those of
    0, 1, ..., 100 %): 0-100, linear between quantiles, clipped at the ends.

    >>> percentile_of(5.0, np.linspace(0.0, 10.0, 101))
    50.0
    >>> percentile_of(-3.0, np.linspace(0.0, 10.0, 101)), percentile_of(99.0, np.linspace(0.0, 10.0, 101))
    (0.0, 100.0)
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if q.shape != (101,) or bool(np.any(np.diff(q) < 0)):
        raise ValueError(f"quantiles must be 101 non-decreasing values (0..100 %), got shape {q.shape}")
    return float(np.interp(value, q, np.arange(101.0)))


LOW_SCORE = 0.85
"""A face kept by the detector but scored below this is flagged ``low_score`` (real faces in the
bundled and MEBeauty photos score 0.8-0.95; an earring-and-background crop scored 0.81)."""
SMALL_FACE = 40.0
"""A face box narrower than this (photo pixels) is flagged ``small_face``: its crop is upscaled
from too few pixels to show age."""
FLAT_WIDTH = 0.35
"""A 90% interval wider than this share of the label range is flagged ``flat_distribution``."""

FLAGS = {
    "low_score": f"the detector scored the face below {LOW_SCORE}: it may not be a face",
    "small_face": f"the face is under {SMALL_FACE:g} px wide: too few pixels to judge",
    "flat_distribution": f"the 90% interval spans over {FLAT_WIDTH:.0%} of the label range: the model is unsure",
    "two_peaks": "the distribution has two separate peaks: two readings are about equally likely",
    "outside_training_range": "the estimate lies outside the labels the model was trained on",
}
"""Why an estimate is not to be trusted: ``dldl predict``'s ``note`` column and JSON ``flags``."""


def two_peaks(p: np.ndarray, ratio: float = 0.4) -> bool:
    """Whether ``(K,)`` distribution ``p`` has two separate modes: after a short box smoothing, a
    second local maximum at least ``ratio`` times the highest, with a valley between them below
    60% of the lower peak.

    >>> x = np.arange(100.0)
    >>> bump = lambda m: np.exp(-0.5 * ((x - m) / 4) ** 2)
    >>> two_peaks(bump(20) + bump(70)), two_peaks(bump(40)), two_peaks(bump(40) + bump(48))
    (True, False, False)
    """
    if p.ndim != 1:
        raise ValueError(f"p must be (K,), got shape {p.shape}")
    k = max(3, len(p) // 40) | 1
    s = np.convolve(p, np.ones(k) / k, mode="same")
    peaks = [i for i in range(1, len(s) - 1) if s[i] >= s[i - 1] and s[i] > s[i + 1]]
    if len(peaks) < 2:
        return False
    first = max(peaks, key=lambda i: s[i])
    for i in sorted(peaks, key=lambda i: -s[i]):
        if i != first and s[i] >= ratio * s[first]:
            lo, hi = sorted((i, first))
            if s[lo:hi + 1].min() < 0.6 * s[i]:
                return True
    return False


def face_flags(face: FacePrediction, spec: ModelSpec) -> tuple[str, ...]:
    """The :data:`FLAGS` that apply to ``face`` as estimated by a model of ``spec``."""
    flags = []
    if face.score is not None and face.score < LOW_SCORE:
        flags.append("low_score")
    if face.landmarks is not None and face.box[2] - face.box[0] < SMALL_FACE:
        flags.append("small_face")
    span = spec.labels.stop - spec.labels.start
    if face.interval is not None and span > 0 and face.interval[1] - face.interval[0] > FLAT_WIDTH * span:
        flags.append("flat_distribution")
    if face.distribution is not None and two_peaks(face.distribution):
        flags.append("two_peaks")
    low, high = spec.label_range or (spec.labels.start, spec.labels.stop)
    if not low - 1 <= face.value <= high + 1:
        flags.append("outside_training_range")
    return tuple(flags)


@dataclass
class VideoResult:
    """One video through the pipeline: its face ``tracks`` (:class:`dldl.video.Track`), each with
    one estimate; renders itself as JSON rows and table rows."""

    path: str
    tracks: list[Any]
    task: str
    model: str
    labels: LabelSet
    model_version: str | None = None

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON object per track (``dldl predict --json`` prints one a line), or one saying no face was found."""
        rows = [t.to_dict(self.path, self.task, self.labels, self.model, self.model_version) | {"error": None}
                for t in self.tracks]
        return rows or [{"video": self.path, "track": None, "error": None, "note": "no face found"}]

    def table_rows(self) -> list[tuple[str, ...]]:
        """``(video, track, frames, seconds, estimate, interval, note)`` per track."""
        rows = []
        for r in self.to_dicts():
            video = Path(r["video"]).name
            if r["track"] is None:
                rows.append((video, "", "", "", "", "", r.get("note", "")))
                continue
            secs = "" if r["first_time"] is None else f"{r['first_time']:.1f}-{r['last_time']:.1f}"
            iv = r["interval_90"]
            rows.append((video, str(r["track"]), f"{r['first_frame']}-{r['last_frame']} ({r['frames']})", secs,
                         f"{r[self.task]:.1f}", f"{iv[0]:g}-{iv[1]:g}" if iv else "", ""))
        return rows
