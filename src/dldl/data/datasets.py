"""The dataset registry: one :class:`DatasetInfo` entry per dataset, read by name.

Each entry names its reader (in :mod:`dldl.data.sources`) and the facts a training run takes its
defaults from: the task, the label set, the default train/val/test splits, the target kind and
the alignment template its crops follow. ``dldl train --dataset mebeauty --root DIR`` therefore
needs nothing else. Adding a dataset means one reader plus one entry in :data:`DATASETS`.

Target kinds: ``"gaussian"`` (a discretised Gaussian around the label, with the sample's own
sigma when the dataset gives one), ``"histogram"`` (the raters' histogram), ``"interval"`` (the
truth is a range, e.g. an age group: :func:`dldl.labels.interval_distribution`). Samples that
carry an interval are always given interval targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dldl.data import sources
from dldl.data.samples import SampleList
from dldl.errors import DataError

TARGETS = ("gaussian", "gaussian_fixed", "histogram", "interval")
"""The target kinds a dataset entry (or a training source) may name: ``gaussian`` around the label
with the face's own sigma where the set gives one (MEBeauty's rater std) and ``sigma`` otherwise;
``gaussian_fixed`` with ``sigma`` for every face (the paper's); the raters' ``histogram``; an age
``interval`` (FairFace's groups)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What dldl knows about one dataset.

    Attributes:
        name: the registry key (lower case).
        read: ``read(root, split, **kw) -> SampleList``; ``split`` is ``None`` for sets without splits.
        task: ``"age"`` or ``"beauty"``.
        labels: the label set, ``"start:stop:step"``.
        target: the default target kind (one of :data:`TARGETS`).
        template: the alignment template of the set's face crops, which a model trained on it
            uses for photos; for sets of photos (``SampleList.align``) the template their faces are
            aligned to by default.
        train_split, val_split, test_split: the default splits (``None``: none; a missing
            validation split means a hash hold-out of the training split).
        needs_split: ``load_dataset`` refuses ``split=None``.
        has_splits: ``False`` for sets that are one list (``split`` must be ``None`` or ``"all"``).
        help: what ``root`` and ``split`` mean, for messages and ``dldl info``.
    """

    name: str
    read: Callable[..., SampleList]
    task: str
    labels: str
    target: str
    template: str
    train_split: str | None
    val_split: str | None
    test_split: str | None
    help: str
    needs_split: bool = True
    has_splits: bool = True

    def defaults(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields this entry supplies."""
        return {"task": self.task, "labels": self.labels, "target": self.target, "template": self.template,
                "train_split": self.train_split, "val_split": self.val_split, "test_split": self.test_split}


def _csv(root: Path, split: str | None, **kw: Any) -> SampleList:
    if split and root.is_file():
        raise DataError(root, f"split {split!r} names a CSV in a folder, but the root is a CSV file (give the folder "
                              "as the root, or leave the split out)")
    return sources.read_manifest_csv(root / split if split else root, **kw)


def _morph(root: Path, split: str | None, **kw: Any) -> SampleList:
    if root.suffix.lower() in (".txt", ".csv"):
        return sources.read_morph_list(root, **kw)
    return sources.read_morph(root / "Morph_imdbs.mat" if root.is_dir() else root, split=split or "train", **kw)


_AGE = "0:100:1"
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("csv", _csv, "age", _AGE, "gaussian", "utkface", None, None, None,
                "root = a CSV (header path,label[,sigma]), or its folder with split = the CSV name", needs_split=False),
    DatasetInfo("utkface", sources.read_utkface, "age", _AGE, "gaussian", "utkface", "coral_train", None, "coral_test",
                "root = UTKFace folder; split = coral_train|coral_test|full_train|full_val|full_test or a file"),
    DatasetInfo("mebeauty", sources.read_mebeauty, "beauty", "1:10:0.1", "gaussian", "mebeauty", "train", "val", "test",
                "root = MEBeauty folder; split = train|val|test (official 2022 split)"),
    DatasetInfo("aaf", sources.read_aaf, "age", _AGE, "gaussian", "utkface", "train", None, "val",
                "root = 'All-Age-Faces Dataset' folder (or its parent); split = train|val (official)"),
    DatasetInfo("fairface", sources.read_fairface, "age", _AGE, "interval", "utkface", "train", None, "val",
                "root = folder with fairface_label_{train,val}.csv and fair_face/; split = train|val; ages are groups"),
    DatasetInfo("fgnet", sources.read_fgnet, "age", _AGE, "gaussian", "utkface", None, None, "all",
                "root = FGNET folder (or its parent); split = all | lopo<id>_train | lopo<id>_test (e.g. lopo001_test)",
                needs_split=False),
    DatasetInfo("adience", sources.read_age_groups, "age", _AGE, "interval", "utkface", None, None, "all",
                "root = folder with labels.csv (filename,age,age_low,age_high,user_id,face_id) and data/; split = all; "
                "ages are bins; meta person = user/face", needs_split=False),
    DatasetInfo("imdbwiki3", sources.read_age_groups, "age", _AGE, "interval", "utkface", None, None, "all",
                "root = folder with labels.csv (filename,age,age_low,age_high,class) and Train/; split = all; "
                "ages are the classes 0-29, 30-59, 60-100", needs_split=False),
    DatasetInfo("chalearn15", sources.read_chalearn, "age", _AGE, "gaussian", "utkface", "train", None, "val",
                "root = chalearn15_train_val_labels.csv or its folder; split = train|val"),
    DatasetInfo("chalearn16", sources.read_chalearn, "age", _AGE, "gaussian", "utkface", "train", "val", "test",
                "root = <split>_gt.csv or its folder; split = train|val|test"),
    DatasetInfo("morph", _morph, "age", _AGE, "gaussian", "utkface", "train", None, "test",
                "root = Morph_imdbs.mat or its folder (fold=0..9; split = train|test) or an 'image age' list",
                needs_split=False),
    DatasetInfo("scut-fbp5500", lambda root, split, **kw: sources.read_scut_fbp5500(root, split or "all", **kw),
                "beauty", "1:5:0.05", "gaussian", "mebeauty", "train", None, "test",
                "root = SCUT-FBP5500 folder (Images/ + train_test_files/); split = all|train|test (60/40)|"
                "cv1_train..cv5_test or a file; photos aligned to the beauty template", needs_split=False),
    DatasetInfo("scut-fbp", lambda root, split, **kw: sources.read_scut_fbp(root, **kw), "beauty", "1:5:0.05",
                "gaussian", "utkface", "all", None, None, "root = folder with 'Attractiveness label.xlsx'; no split",
                needs_split=False, has_splits=False),
    DatasetInfo("cfd", lambda root, split, **kw: sources.read_cfd(root, **kw), "beauty", "1:7:0.1", "gaussian",
                "utkface", "all", None, None, "root = CFD norming-data .xlsx; no split", needs_split=False, has_splits=False),
]}
"""Every known dataset by name."""


def get_dataset(name: str) -> DatasetInfo:
    """The registry entry called ``name`` (case and surrounding blanks ignored).

    >>> get_dataset("MEBeauty").task
    'beauty'
    >>> get_dataset("utkfase")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    dldl.errors.DataError: unknown dataset 'utkfase' (known: csv, utkface, mebeauty, ..., cfd)
    """
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise DataError(None, f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[key]


def load_dataset(name: str, root: str | Path, split: str | None = None, **kw: Any) -> SampleList:
    """Read split ``split`` of dataset ``name`` from ``root``; ``kw`` goes to its reader
    (e.g. ``require_images=False``, ``fold=3`` for MORPH, ``image="original"`` for MEBeauty/AAF).

    >>> load_dataset("imdb", "/data", "train")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    dldl.errors.DataError: unknown dataset 'imdb' (known: csv, utkface, mebeauty, ..., cfd)
    """
    info, r = get_dataset(name), Path(root)
    if split is None and info.needs_split:
        raise DataError(r, f"dataset {info.name!r} needs a split ({info.help})")
    if not info.has_splits and split not in (None, "all"):
        raise DataError(r, f"dataset {info.name!r} has no splits (got split {split!r}; use 'all')")
    return info.read(r, split, **kw)
