"""Label-file readers: one function per dataset, each returning a :class:`SampleList`.

Every problem a user can cause (missing file or column, empty file, non-numeric or NaN label,
unknown split, image that does not exist) raises :class:`DataError` with one line naming the file
and, where there is one, the line/row. Recoverable oddities issue a counted :class:`DataWarning`
instead: repeated rows (the later ones are dropped; two rows giving one image different labels are an
error naming both lines) and MEBeauty faces without an image (skipped).
Image paths are checked (``require_images=True``) before anything is returned, so a broken split
fails before training starts; pass ``require_images=False`` to read labels without images.

The registry that names each dataset, with its splits, task, labels and target kind, is
:mod:`dldl.data.datasets` (``load_dataset(name, root, split)``).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import itertools
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dldl.data.samples import Sample, SampleList
from dldl.errors import DataError, first_line
from dldl.labels import LabelSet

PathLike = str | Path
Column = str | tuple[str, ...]  # a column name, or alternative names (the first is the key used)
_Rows = list[tuple[str, Sample]]  # (where, e.g. "line 7", sample)


class DataWarning(UserWarning):
    """A recoverable data problem: ``count`` rows of ``path`` were dropped or skipped."""

    def __init__(self, path: PathLike, count: int, problem: str) -> None:
        self.path, self.count, self.problem = str(path), count, problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------- shared helpers


def _number(value: object, path: PathLike, where: str, what: str, minimum: float | None = None,
            whole: bool = False) -> float:
    """``value`` (text or a spreadsheet cell) as a finite float (``>= minimum``, a whole number if
    ``whole``), else a DataError naming file, place and value.

    >>> _number(" 2.5", "a.csv", "line 3", "age")
    2.5
    >>> _number("abc", "a.csv", "line 3", "age")
    Traceback (most recent call last):
    dldl.errors.DataError: a.csv: line 3: age 'abc' is not a number
    >>> _number("1_0", "a.csv", "line 4", "age")
    Traceback (most recent call last):
    dldl.errors.DataError: a.csv: line 4: age '1_0' is not a number
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(path, f"{where}: {what} is empty")
    if isinstance(value, str) and "_" in value:  # float() reads "1_0" as 10, as Python source would
        raise DataError(path, f"{where}: {what} {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise DataError(path, f"{where}: {what} {value!r} is not a finite number")
    if minimum is not None and x < minimum:
        raise DataError(path, f"{where}: {what} {x:g} is below {minimum:g}")
    if whole and not x.is_integer():
        raise DataError(path, f"{where}: {what} {value!r} is not a whole number")
    return x


def _file(path: PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "is a folder, expected a file" if p.is_dir() else "file not found")
    return p


def _text(path: PathLike) -> str:
    p = _file(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(p, f"not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def _lines(path: PathLike) -> list[tuple[int, str]]:
    """The non-blank lines of a text file as ``(line number, stripped text)``; empty file = error."""
    out = [(i, s.strip()) for i, s in enumerate(_text(path).splitlines(), 1) if s.strip()]
    if not out:
        raise DataError(path, "empty file")
    return out


def _pairs(path: PathLike) -> list[tuple[int, str, str]]:
    """Lines ``"<image> <value>"`` (the image name may contain spaces) as (line, image, value)."""
    out = []
    for i, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(path, f"line {i}: expected '<image> <value>', got {line!r}")
        out.append((i, parts[0], parts[1]))
    return out


def _columns(path: PathLike, header: list[str], columns: Sequence[Column]) -> dict[str, str]:
    """Map each required column (first alternative name) to the header name present."""
    found, missing = {}, []
    for col in columns:
        alts = (col,) if isinstance(col, str) else col
        name = next((a for a in alts if a in header), None)
        if name is None:
            missing.append("/".join(alts))
        else:
            found[alts[0]] = name
    if missing:
        shown = ", ".join(h for h in header if h) or "nothing"
        raise DataError(path, f"missing column(s) {', '.join(missing)} (header has: {shown})")
    return found


def _read_csv(path: PathLike, columns: Sequence[Column]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header line, as ``(line number, {column: stripped text})``.

    Required ``columns`` are checked; their values are also stored under the first alternative
    name. Blank lines are skipped; a row with a different field count is an error.
    """
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise DataError(path, "empty file (no header line)")
        alias = _columns(path, header, columns)
        rows = []
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(path, f"line {reader.line_num}: {len(row)} fields, header has {len(header)}")
            d = dict(zip(header, (c.strip() for c in row)))
            rows.append((reader.line_num, d | {k: d[v] for k, v in alias.items()}))
    except csv.Error as e:  # a field over csv's size limit (128 KiB), a NUL byte, a broken quote
        raise DataError(path, f"line {reader.line_num}: not valid CSV ({first_line(e)})") from None
    return rows


def _read_xlsx(path: PathLike, columns: Sequence[str], sheet: str | None = None, scan: int = 20
               ) -> list[tuple[int, dict[str, object]]]:
    """Rows of an .xlsx sheet (default: the first) as ``(row number, {column: cell value})``.

    The header is the first of the top ``scan`` rows that holds every required column, so title
    rows above the table are skipped. Blank rows are skipped.
    """
    import openpyxl  # imported lazily: only the spreadsheet readers need it

    p = _file(path)
    try:
        wb = openpyxl.load_workbook(p, read_only=True, data_only=True)
    except Exception as e:  # zipfile/XML/format errors: all mean "not a readable .xlsx"
        raise DataError(p, f"cannot read as .xlsx ({type(e).__name__}: {e})") from None
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise DataError(p, f"no sheet {sheet!r} (sheets: {', '.join(wb.sheetnames)})")
        ws = wb[sheet] if sheet is not None else wb.worksheets[0]
        it = enumerate(ws.iter_rows(values_only=True), 1)
        for _, row in itertools.islice(it, scan):
            header = ["" if c is None else str(c).strip() for c in row]
            if all(c in header for c in columns):
                break
        else:
            raise DataError(p, f"sheet {ws.title!r}: no header row with column(s) {', '.join(columns)}"
                               f" in the first {scan} rows")
        out = [(n, dict(zip(header, row))) for n, row in it
               if any(c is not None and str(c).strip() for c in row)]
    finally:
        wb.close()
    return out


def _image(base: Path, name: str, path: PathLike, where: str) -> Path:
    if not name:
        raise DataError(path, f"{where}: image name is empty")
    return base / name


def _truth(s: Sample) -> str:
    """A sample's label as a reader would say it: the value, or its interval, sigma and histogram when given."""
    parts = [f"{s.label:g}" if s.interval is None else f"{s.interval[0]:g}-{s.interval[1]:g}"]
    if s.sigma is not None:
        parts.append(f"sigma {s.sigma:g}")
    if s.histogram is not None:
        parts.append("histogram " + " ".join(f"{c:g}" for c in s.histogram))
    return ", ".join(parts)


def _finish(name: str, sources: Sequence[PathLike], rows: _Rows, require_images: bool,
            bins: tuple[float, ...] | None = None) -> SampleList:
    """Drop duplicate images (counted warning), check non-empty and that images exist."""
    src = str(sources[0])
    if not rows:
        raise DataError(src, f"no samples for {name} (no data rows, or the split selects none)")
    first: dict[Path, tuple[str, Sample]] = {}
    dups: list[str] = []
    for where, s in rows:
        if s.path not in first:
            first[s.path] = (where, s)
        elif s != first[s.path][1]:
            w0, s0 = first[s.path]
            raise DataError(src, f"{where} and {w0} give {s.path.name} different labels ({_truth(s)} against {_truth(s0)}); "
                                 "keep one row per image")
        else:
            dups.append(f"{where} repeats {first[s.path][0]}")
    if dups:
        shown = "; ".join(dups[:3]) + (f"; ... and {len(dups) - 3} more" if len(dups) > 3 else "")
        msg = f"{len(dups)} duplicate row(s) dropped ({shown})"
        warnings.warn(DataWarning(src, len(dups), msg), stacklevel=3)
        rows = [(w, s) for w, s in rows if first[s.path][0] == w]
    if require_images:
        missing = [f"{w}: {s.path}" for w, s in rows if not s.path.is_file()]
        if missing:
            raise DataError(src, f"{len(missing)} of {len(rows)} images not found (check the dataset "
                                 f"root), e.g. {'; '.join(missing[:3])}")
    return SampleList(name, [s for _, s in rows], bins, tuple(str(s) for s in sources))


def _pick(split: PathLike, folder: Path, named: dict[str, str | tuple[str, ...]] | None = None) -> Path:
    """The split file ``split`` names: an existing path, a short name (whose file may be spelt
    several ways, the first that exists wins), or ``<folder>/<split>[.txt]``."""
    cands = [Path(split), folder / split, folder / f"{split}.txt"]
    if named and str(split) in named:
        spellings = named[str(split)]
        cands[:0] = [folder / f for f in ((spellings,) if isinstance(spellings, str) else spellings)]
    for c in cands:
        if c.is_file():
            return c
    if not folder.is_dir():
        raise DataError(folder, "folder not found (is the root the dataset's own folder?)")
    if named and str(split) in named:
        raise DataError(cands[0], f"the file of split {str(split)!r} is missing")
    known = sorted(named) if named else sorted(f.stem for f in folder.glob("*.txt"))
    raise DataError(folder, f"unknown split {str(split)!r} (known: {', '.join(known) or 'none found'})")


# --------------------------------------------------------------------------- readers


def read_manifest_csv(path: PathLike, root: PathLike | None = None, *,
                      require_images: bool = True) -> SampleList:
    """A generic CSV with header ``path,label[,sigma]``; other columns become ``meta``.

    Image paths resolve against ``root`` (default: the CSV's folder). Returns one sample per row.
    """
    rows = _read_csv(path, ["path", "label"])
    base = Path(root) if root is not None else Path(path).parent
    out: _Rows = []
    for i, r in rows:
        w = f"line {i}"
        sigma = _number(r["sigma"], path, w, "sigma", 0.0) if r.get("sigma") else None
        meta = {k: v for k, v in r.items() if k not in ("path", "label", "sigma") and v}
        out.append((w, Sample(_image(base, r["path"], path, w), _number(r["label"], path, w, "label"),
                              sigma, None, meta)))
    return _finish(f"csv/{Path(path).stem}", [path], out, require_images)


_UTK_GENDER = {"0": "male", "1": "female"}
_UTK_RACE = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}


def read_utkface(root: PathLike, split: PathLike, *, require_images: bool = True) -> SampleList:
    """UTKFace: ``split`` is a name in ``<root>/splits/`` (``"coral_train"``) or a split file path.

    The age is the filename's first ``_`` field; ``meta`` gender/race (as words) come from
    ``<root>/labels.csv`` when present. Images are ``<root>/images/<filename>``.
    """
    root = Path(root)
    f = _pick(split, root / "splits")
    meta: dict[str, dict[str, str]] = {}
    if (root / "labels.csv").is_file():
        for _, r in _read_csv(root / "labels.csv", ["filename"]):
            meta[r["filename"]] = {k: m[r[k]] for k, m in (("gender", _UTK_GENDER), ("race", _UTK_RACE))
                                   if r.get(k) in m}
    out: _Rows = []
    for i, name in _lines(f):
        w = f"line {i}"
        age = _number(name.split("_", 1)[0], f, w, f"age (first field of {name!r})", 0.0)
        out.append((w, Sample(_image(root / "images", name, f, w), age, meta=meta.get(name, {}))))
    return _finish(f"utkface/{Path(f).stem}", [f], out, require_images)


_MEB_IMAGE = {"crop": ("crop_mtcnn_224", "cropped_images/images_crop_align_mtcnn"),
              "original": ("original_image", "original_images")}


def read_mebeauty(root: PathLike, split: str, *, image: str = "crop",
                  require_images: bool = True) -> SampleList:
    """MEBeauty, official 2022 split (``"train"``, ``"val"``, ``"test"``) from ``<root>/labels.csv``.

    Label ``score_2022`` (1..10), sigma = the raters' std ``rating_std`` (``None`` if absent),
    histogram ``n_rating_1..10`` (bins 1..10; ``None`` for a face with no ratings), meta
    gender/ethnicity. ``image="crop"`` uses the authors' 224x224 MTCNN crop,
    ``"original"`` the in-the-wild photo. Faces whose chosen image is absent (about 178 have no
    crop) are skipped with one counted :class:`DataWarning`, unless ``require_images=False``.
    """
    if image not in _MEB_IMAGE:
        raise DataError(None, f"MEBeauty image must be one of {', '.join(_MEB_IMAGE)}, got {image!r}")
    col, folder = _MEB_IMAGE[image]
    root, f = Path(root), Path(root) / "labels.csv"
    hist_cols = [f"n_rating_{k}" for k in range(1, 11)]
    rows = _read_csv(f, ["rel_path", col, "split_2022", "score_2022", *hist_cols])
    splits = sorted({r["split_2022"] for _, r in rows if r["split_2022"]})
    if split not in splits:
        raise DataError(f, f"unknown split {split!r} (split_2022 has: {', '.join(splits)})")
    out: _Rows = []
    skipped = []
    for i, r in rows:
        if r["split_2022"] != split:
            continue
        w = f"line {i}"
        p = root / (r[col] or f"{folder}/{r['rel_path']}")
        if require_images and not (r[col] and p.is_file()):
            skipped.append(r["rel_path"])
            continue
        counts = tuple(_number(r[c], f, w, c, 0.0) for c in hist_cols)
        meta = {k: r[k] for k in ("gender", "ethnicity") if r.get(k)}
        std = _number(r["rating_std"], f, w, "rating_std", 0.0) if r.get("rating_std") else 0.0
        out.append((w, Sample(p, _number(r["score_2022"], f, w, "score_2022"), std or None,
                              counts if sum(counts) > 0 else None, meta)))
    if skipped:
        msg = (f"split {split!r}: {len(skipped)} of {len(skipped) + len(out)} faces skipped, "
               f"no {image} image (first: {skipped[0]})")
        warnings.warn(DataWarning(f, len(skipped), msg), stacklevel=2)
    return _finish(f"mebeauty/{split}", [f], out, require_images, tuple(float(k) for k in range(1, 11)))


def read_chalearn(path_or_root: PathLike, split: str, *, image_root: PathLike | None = None,
                  require_images: bool = True) -> SampleList:
    """ChaLearn LAP apparent age (2015 or 2016); label = mean apparent age, sigma = its std.

    2015 form: one CSV ``name,set,apparent_age_mean,apparent_age_std`` (``set`` = ``train``/``val``;
    ``split`` selects it); images ``<csv folder>/<name>`` (e.g. ``Train/image_1.jpg``).
    2016 form: one CSV per split, ``image,mean,stdv`` (``train_gt.csv``, ``valid_gt.csv``); images
    ``<csv folder>/<csv stem minus _gt>/<image>``. ``path_or_root`` is the CSV or its folder.
    """
    p = Path(path_or_root)
    if p.is_dir():
        stem = "valid" if split == "val" else split
        cands = [p / "chalearn15_train_val_labels.csv", p / f"{stem}_gt.csv"]
        p = next((c for c in cands if c.is_file()), cands[0])
    rows = _read_csv(p, [("name", "image"), ("apparent_age_mean", "mean"), ("apparent_age_std", "stdv")])
    if rows and "set" in rows[0][1]:
        sets = sorted({r["set"] for _, r in rows})
        if split not in sets:
            raise DataError(p, f"unknown split {split!r} (column 'set' has: {', '.join(sets)})")
        rows = [(i, r) for i, r in rows if r["set"] == split]
        base = Path(image_root) if image_root is not None else p.parent
    else:
        base = Path(image_root) if image_root is not None else p.parent / p.stem.removesuffix("_gt")
    out: _Rows = []
    for i, r in rows:
        w = f"line {i}"
        age = _number(r["apparent_age_mean"], p, w, "mean age")
        std = _number(r["apparent_age_std"], p, w, "age std", 0.0)
        out.append((w, Sample(_image(base, r["name"], p, w), age, std)))
    return _finish(f"chalearn/{split}", [p], out, require_images)


_MORPH_SETS = {"train": 1, "test": 2, "val": 2}
_MORPH_GENDER = re.compile(r"_\d+([MF])\d+\.", re.IGNORECASE)


@functools.lru_cache(maxsize=2)
def _loadmat(path: str, mtime_ns: int) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError/TypeError/OSError for non-.mat input
        raise DataError(path, f"cannot read as a MATLAB .mat file ({type(e).__name__}: {e})") from None


def read_morph(mat_path: PathLike, fold: int = 0, split: str = "train", *,
               image_root: PathLike | None = None, require_images: bool = True,
               use_file_sigma: bool = False) -> SampleList:
    """MORPH II, one of the 10 DLDL random splits in ``Morph_imdbs.mat`` (``fold`` 0..9 =
    MATLAB ``IMDB(1..10)``).

    ``IMDB(k).images`` holds ``name`` (N,), ``set`` (N,) and ``label`` (2, N) = age, sigma. In the
    real file ``set`` is 1 (train, ~49.6k) or 2 (the held-out ~5.5k; ``meta.sets`` calls it 'val',
    DLDL reports it as test): ``split="test"`` and ``"val"`` both select 2. Label row 2 is 2 for every
    image (DLDL's fixed sigma), so it is only used when ``use_file_sigma``. meta gender is parsed
    from names like ``009055_0M54.JPG``. Images: ``<image_root or .mat folder>/<name>``.
    """
    p = _file(mat_path)
    if split not in _MORPH_SETS:
        raise DataError(p, f"unknown split {split!r} (known: {', '.join(_MORPH_SETS)})")
    imdb = _loadmat(str(p), p.stat().st_mtime_ns).get("IMDB")
    if imdb is None:
        raise DataError(p, "no variable 'IMDB' (expected the DLDL Morph_imdbs.mat layout)")
    folds = np.atleast_1d(imdb)
    if not 0 <= fold < len(folds):
        raise DataError(p, f"fold {fold} out of range (the file has folds 0..{len(folds) - 1})")
    try:
        im = folds[fold].images
        names, sets = np.atleast_1d(im.name), np.atleast_1d(im.set)
        label = np.asarray(im.label, dtype=np.float64).reshape(-1, len(names))
    except (AttributeError, ValueError) as e:
        raise DataError(p, f"IMDB({fold + 1}).images is not name/set/label as expected ({e})") from None
    base = Path(image_root) if image_root is not None else p.parent
    out: _Rows = []
    for j in np.flatnonzero(sets == _MORPH_SETS[split]):
        w = f"IMDB({fold + 1}) image {j + 1}"
        sigma = _number(label[1, j], p, w, "sigma", 0.0) if use_file_sigma and len(label) > 1 else None
        g = _MORPH_GENDER.search(str(names[j]))
        meta = {"gender": "male" if g.group(1).upper() == "M" else "female"} if g else {}
        age = _number(label[0, j], p, w, "age")
        out.append((w, Sample(_image(base, str(names[j]), p, w), age, sigma, None, meta)))
    return _finish(f"morph/fold{fold}/{split}", [p], out, require_images)


def read_morph_list(path: PathLike, root: PathLike | None = None, *,
                    require_images: bool = True) -> SampleList:
    """A plain ``"<image> <age>"`` list (MORPH and similar); images resolve against ``root``
    (default: the list's folder)."""
    base = Path(root) if root is not None else Path(path).parent
    out: _Rows = [(f"line {i}", Sample(_image(base, n, path, f"line {i}"),
                                       _number(v, path, f"line {i}", "age", 0.0)))
                  for i, n, v in _pairs(path)]
    return _finish(f"list/{Path(path).stem}", [path], out, require_images)


_SCUT_NAMES = {"fty": "AF", "ftw": "CF", "mty": "AM", "mtw": "CM"}  # pre-release -> released prefix
_SCUT_NAMES |= {v: k for k, v in _SCUT_NAMES.items()}  # and back
_SCUT_SPLITS = {"all": ("All_labels.txt", "SCUT-FBP5500.txt"), **{  # the release's names, then the pre-release's
    f"{s}": (f"split_of_60%training and 40%testing/{s}.txt", f"split_of_60%training_40%testing/{s}.txt")
    for s in ("train", "test")}, **{
    f"cv{k}_{s}": (f"5_folders_cross_validations_files/cross_validation_{k}/{s}_{k}.txt",)
    for k in range(1, 6) for s in ("train", "test")}}


def _scut_layout(root: Path, image_dir: str) -> tuple[Path, Path]:
    """The label folder and image folder of a SCUT-FBP5500 copy: the release's ``<root>/Images``
    and ``<root>/train_test_files``, or the ``data/landing/Images`` and
    ``data/curated/train_test_files`` of the copy listed in EXTERNAL.md."""
    for labels, images in ((root / "train_test_files", root / image_dir),
                           (root / "data" / "curated" / "train_test_files", root / "data" / "landing" / image_dir)):
        if labels.is_dir():
            return labels, images
    return root / "train_test_files", root / image_dir


def _scut_image(folder: Path, name: str) -> tuple[Path, dict[str, str]]:
    """The image file for ``name`` under either naming scheme (fty12.jpg == AF12.jpg)."""
    m = re.fullmatch(r"(fty|ftw|mty|mtw|AF|CF|AM|CM)(\d+\.\w+)", name)
    if not m:
        return folder / name, {}
    new = m[1] if m[1].isupper() else _SCUT_NAMES[m[1]]  # AF = Asian female, CM = Caucasian male, ...
    meta = {"gender": "female" if new[1] == "F" else "male",
            "ethnicity": "asian" if new[0] == "A" else "caucasian"}
    for cand in (folder / name, folder / f"{_SCUT_NAMES[m[1]]}{m[2]}"):
        if cand.is_file():
            return cand, meta
    return folder / f"{new}{m[2]}", meta


def read_scut_fbp5500(root: PathLike, split_file: PathLike = "all", *, image_dir: str = "Images",
                      require_images: bool = True) -> SampleList:
    """SCUT-FBP5500: ``"name score"`` lines (the mean of 60 raters, 1..5) from the
    ``train_test_files/`` folder (:func:`_scut_layout`).

    ``split_file``: a path, or ``"all"`` (``All_labels.txt``; pre-release ``SCUT-FBP5500.txt``),
    ``"train"``/``"test"`` (the official 60/40 split), ``"cv1_train"`` ... ``"cv5_test"`` (the 5
    folds). Names may use the pre-release prefixes fty/ftw/mty/mtw or the released AF/CF/AM/CM;
    whichever file exists among the images is used (released name if neither). meta
    gender/ethnicity follow the prefix. The images are 350x350 portraits with margin: they are
    detected and aligned to the model's template when decoded (``SampleList.align``), like photos.
    """
    labels, images = _scut_layout(Path(root), image_dir)
    f = _pick(split_file, labels, _SCUT_SPLITS)
    out: _Rows = []
    for i, name, v in _pairs(f):
        img, meta = _scut_image(images, name)
        out.append((f"line {i}", Sample(img, _number(v, f, f"line {i}", "score"), meta=meta)))
    return _finish_photos(f"scut-fbp5500/{Path(f).stem}", [f], out, require_images)


def read_scut_fbp(root: PathLike, *, image_dir: str = "Data_Collection",
                  require_images: bool = True) -> SampleList:
    """SCUT-FBP (500 faces): ``<root>/Attractiveness label.xlsx`` (#Image, mean 1..5, std = sigma).

    With ``<root>/Ratings of all raters.xlsx`` (long format #Rater, #image, Rating) each sample gets
    its rating histogram over bins 1..5. Images: ``<root>/<image_dir>/SCUT-FBP-<n>.jpg``.
    """
    root = Path(root)
    f, rf = root / "Attractiveness label.xlsx", root / "Ratings of all raters.xlsx"
    rows = _read_xlsx(f, ["#Image", "Attractiveness label", "Standard Deviation"])
    hist: dict[int, list[int]] = {}
    if rf.is_file():
        for n, r in _read_xlsx(rf, ["#image", "Rating"]):
            k = int(_number(r["Rating"], rf, f"row {n}", "Rating", whole=True))
            if not 1 <= k <= 5:
                raise DataError(rf, f"row {n}: Rating {k} is not one of 1..5")
            img = int(_number(r["#image"], rf, f"row {n}", "#image", whole=True))
            hist.setdefault(img, [0] * 5)[k - 1] += 1
    out: _Rows = []
    for n, r in rows:
        w = f"row {n}"
        idx = int(_number(r["#Image"], f, w, "#Image", whole=True))
        h = hist.get(idx)
        out.append((w, Sample(root / image_dir / f"SCUT-FBP-{idx}.jpg",
                              _number(r["Attractiveness label"], f, w, "Attractiveness label"),
                              _number(r["Standard Deviation"], f, w, "Standard Deviation", 0.0),
                              tuple(float(c) for c in h) if h else None)))
    bins = (1.0, 2.0, 3.0, 4.0, 5.0) if hist else None
    return _finish("scut-fbp/all", [f, rf] if hist else [f], out, require_images, bins)


def read_cfd(xlsx: PathLike, root: PathLike | None = None, *, sheet: str | None = None,
             image_pattern: str = "{target}/CFD-{target}-*-N.jpg", require_images: bool = True
             ) -> SampleList:
    """Chicago Face Database norming data: a sheet with columns ``Target`` and ``Attractive``
    (mean rating 1..7), header found in the first 20 rows; optional ``Race``/``Gender`` go to meta.

    The image is the first match of ``image_pattern`` (a glob, ``{target}`` filled in) under
    ``root`` (default: the xlsx folder); rows with an empty Target (notes) are skipped.
    """
    base = Path(root) if root is not None else Path(xlsx).parent
    out: _Rows = []
    for n, r in _read_xlsx(xlsx, ["Target", "Attractive"], sheet):
        target = "" if r["Target"] is None else str(r["Target"]).strip()
        if not target:
            continue
        rel = image_pattern.format(target=target)
        matches = sorted(base.glob(rel)) if any(c in rel for c in "*?[") else []
        img = matches[0] if matches else base / rel
        meta = {k.lower(): str(r[k]) for k in ("Race", "Gender") if r.get(k) not in (None, "")}
        label = _number(r["Attractive"], xlsx, f"row {n}", "Attractive")
        out.append((f"row {n}", Sample(img, label, meta=meta)))
    return _finish("cfd/all", [xlsx], out, require_images)


# --------------------------------------------------------------------------- age in the wild


def _finish_photos(name: str, sources: Sequence[PathLike], rows: _Rows, require_images: bool) -> SampleList:
    """:func:`_finish` for sets whose images are photos (or crops in a geometry of their own),
    which are detected and aligned to the model's template when decoded."""
    return dataclasses.replace(_finish(name, sources, rows, require_images), align=True)


_AAF_AGE = re.compile(r"(\d+)A(\d+)\.\w+", re.IGNORECASE)
_AAF_IMAGE = {"aligned": "aglined faces", "original": "original images"}  # sic: the release's spelling
_AAF_FOLDER = "All-Age-Faces Dataset"


def read_aaf(root: PathLike, split: str, *, image: str = "aligned", require_images: bool = True) -> SampleList:
    """All-Age-Faces (13,322 faces, ages 2-80), official split ``"train"`` or ``"val"``.

    ``root`` is the ``All-Age-Faces Dataset`` folder (or the folder holding it). The split file is
    ``image sets/<split>.txt`` (``name gender`` per line); the age is in the name ``NNNNNAyy.jpg``;
    ids up to 7380 are female (meta ``gender``). ``image="aligned"`` reads the release's own crops
    (``aglined faces/``, sic; 309x398, their own geometry), ``"original"`` the unaligned photos;
    both are aligned to the model's template when decoded (``SampleList.align``).
    """
    root = Path(root)
    if not (root / "image sets").is_dir() and (root / _AAF_FOLDER).is_dir():
        root = root / _AAF_FOLDER
    if image not in _AAF_IMAGE:
        raise DataError(None, f"All-Age-Faces image must be one of {', '.join(_AAF_IMAGE)}, got {image!r}")
    f = _pick(split, root / "image sets", {"train": "train.txt", "val": "val.txt"})
    out: _Rows = []
    for i, line in _lines(f):
        w = f"line {i}"
        name = line.split()[0]
        m = _AAF_AGE.fullmatch(name)
        if not m:
            raise DataError(f, f"{w}: {name!r} is not an All-Age-Faces name like 00123A25.jpg")
        meta = {"gender": "female" if int(m[1]) <= 7380 else "male"}
        out.append((w, Sample(root / _AAF_IMAGE[image] / name, float(m[2]), meta=meta)))
    return _finish_photos(f"aaf/{Path(f).stem}/{image}", [f], out, require_images)


FAIRFACE_GROUPS: dict[str, tuple[float, float]] = {
    "0-2": (0, 2), "3-9": (3, 9), "10-19": (10, 19), "20-29": (20, 29), "30-39": (30, 39), "40-49": (40, 49),
    "50-59": (50, 59), "60-69": (60, 69), "more than 70": (70, 90),
    "03-Sep": (3, 9), "Oct-19": (10, 19),  # the groups as a spreadsheet rewrote them in one public copy
}
"""FairFace's age groups as closed intervals of years. The open top group "more than 70" is taken
as 70-90 (few annotated faces are older); the two mangled names of one public copy are accepted."""


def read_fairface(root: PathLike, split: str, *, require_images: bool = True) -> SampleList:
    """FairFace, ``split`` ``"train"`` or ``"val"``: ``<root>/fairface_label_<split>.csv`` with
    columns ``file,age,gender,race``; images ``<root>/fair_face/<file>`` (224x224 crops with margin),
    or ``<root>/<file>`` for the official layout.

    The age is an annotated group (apparent age): each sample gets ``interval`` = the group
    (:data:`FAIRFACE_GROUPS`) and ``label`` = its centre; meta gender and race.
    """
    root = Path(root)
    f = root / f"fairface_label_{split}.csv"
    if split not in ("train", "val") or not f.is_file():
        known = sorted(p.stem.removeprefix("fairface_label_") for p in root.glob("fairface_label_*.csv"))
        raise DataError(root, f"unknown split {split!r} (label files found: {', '.join(known) or 'none'})")
    base = root / "fair_face" if (root / "fair_face").is_dir() else root
    out: _Rows = []
    for i, r in _read_csv(f, ["file", "age"]):
        w = f"line {i}"
        group = FAIRFACE_GROUPS.get(r["age"])
        if group is None:
            raise DataError(f, f"{w}: age group {r['age']!r} is not one of {', '.join(FAIRFACE_GROUPS)}")
        lo, hi = map(float, group)
        meta = {k: r[k].lower() for k in ("gender", "race") if r.get(k)}
        out.append((w, Sample(_image(base, r["file"], f, w), (lo + hi) / 2, meta=meta, interval=(lo, hi))))
    return _finish_photos(f"fairface/{split}", [f], out, require_images)


_FGNET_NAME = re.compile(r"(\d{3})A(\d{2})[a-z]?\.jpg", re.IGNORECASE)


def read_fgnet(root: PathLike, split: str = "all", *, require_images: bool = True) -> SampleList:
    """FG-NET (1,002 photos of 82 people, ages 0-69): ``<root>/images/SSSAyy[x].JPG`` (``root``
    is the ``FGNET`` folder or the folder holding it).

    ``split``: ``"all"`` (the cross-dataset test), or leave-one-person-out ``"lopo<id>_train"`` /
    ``"lopo<id>_test"`` with ``<id>`` the 3-digit person id (``"lopo001_test"`` is person 1's photos).
    meta ``person`` is the id.
    """
    root = Path(root)
    if not (root / "images").is_dir() and (root / "FGNET" / "images").is_dir():
        root = root / "FGNET"
    folder = root / "images"
    if not folder.is_dir():
        raise DataError(root, "no images/ folder (expected the FGNET layout: images/001A02.JPG ...)")
    m = re.fullmatch(r"lopo(\d{3})_(train|test)", split)
    if split != "all" and not m:
        raise DataError(root, f"unknown split {split!r} (all, or lopo<id>_train / lopo<id>_test, e.g. lopo001_test)")
    out: _Rows = []
    for p in sorted(folder.iterdir()):
        n = _FGNET_NAME.fullmatch(p.name)
        if not n:
            continue
        if m and (n[1] == m[1]) != (m[2] == "test"):
            continue
        out.append((p.name, Sample(p, float(n[2]), meta={"person": n[1]})))
    return _finish_photos(f"fgnet/{split}", [folder], out, require_images)


def read_age_groups(root: PathLike, split: str | None = "all", *, require_images: bool = True) -> SampleList:
    """A set whose ages are groups, in the layout of ``labels.csv`` beside its images: Adience
    (fold 0's first part) and the three-class IMDB-WIKI subset, as ``extract-external`` lays them out.

    ``<root>/labels.csv`` has the columns ``filename,age,age_low,age_high`` (inclusive bounds in
    years; ``age`` is the group as written, e.g. ``25-32``) and optionally ``user_id,face_id``
    (Adience: a person is a face id within one user's photos) and ``gender``. Each sample gets
    ``interval = (age_low, age_high)`` and ``label`` its centre (an exact age when both bounds are
    equal). meta ``person`` is ``user_id/face_id`` where given, else the file name (every face its
    own person), so results can be counted by person. ``split`` is ``"all"`` (these sets are held
    out whole). The faces are aligned to the model's template when decoded (``SampleList.align``).
    """
    root = Path(root)
    f = root / "labels.csv"
    split = split or "all"
    if split != "all":
        raise DataError(root, f"unknown split {split!r} (this set is one list: all)")
    if not f.is_file():
        raise DataError(root, "no labels.csv (expected filename,age,age_low,age_high,... as extract-external writes it)")
    out: _Rows = []
    for i, r in _read_csv(f, ["filename", "age_low", "age_high"]):
        w = f"line {i}"
        lo = _number(r["age_low"], f, w, "age_low", minimum=0)
        hi = _number(r["age_high"], f, w, "age_high", minimum=0)
        if hi < lo:
            raise DataError(f, f"{w}: age_high {hi:g} is below age_low {lo:g}")
        person = f"{r['user_id']}/{r['face_id']}" if r.get("user_id") and r.get("face_id") else r["filename"]
        meta = {"person": person} | ({"gender": r["gender"].lower()} if r.get("gender") else {})
        out.append((w, Sample(_image(root, r["filename"], f, w), (lo + hi) / 2, meta=meta,
                              interval=None if lo == hi else (lo, hi))))
    return _finish_photos(f"{root.name}/{split}", [f], out, require_images)


def fgnet_people(root: PathLike) -> list[str]:
    """The person ids of FG-NET (for the LOPO folds ``lopo<id>_train`` / ``_test``)."""
    return sorted({s.meta["person"] for s in read_fgnet(root, "all", require_images=False).samples})


# --------------------------------------------------------------------------- checks


def check_labels_in(samples: SampleList, label_set: LabelSet) -> None:
    """Raise DataError naming the file and first offending sample if a label is outside the set.

    >>> s = SampleList("toy", [Sample(Path("a.jpg"), 3.0), Sample(Path("b.jpg"), 120.0)], source=("t.csv",))
    >>> check_labels_in(s, LabelSet(0, 100, 1))
    Traceback (most recent call last):
    dldl.errors.DataError: t.csv: toy: 1 of 2 labels outside [0, 100] (first: b.jpg, label 120)
    """
    bad = [s for s in samples.samples if not label_set.contains(s.label)]
    if bad:
        raise DataError(samples.source[0] if samples.source else samples.name,
                        f"{samples.name}: {len(bad)} of {len(samples)} labels outside [{label_set.start:g}, "
                        f"{label_set.stop:g}] (first: {bad[0].path}, label {bad[0].label:g})")
