"""What a run depends on: :class:`TrainConfig`, its :data:`PROFILES`, and every rule on its values.

The config is checked in full when it is built, before any file is read: a bad value raises
:class:`~dldl.errors.ConfigError` naming the field, the value and what is allowed (:func:`need`).
Text values (YAML, ``--set``) are typed by :mod:`dldl.config`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dldl.config import coerce, load_yaml
from dldl.data.augment import AugmentConfig
from dldl.data.datasets import DATASETS, TARGETS, get_dataset
from dldl.data.preprocess import cache_size_for
from dldl.errors import ConfigError, DataError, DldlError
from dldl.labels import LabelSet
from dldl.losses import OBJECTIVES
from dldl.models.registry import min_input_size, model_factory
from dldl.models.spec import MAX_CACHE_SIZE, MAX_INPUT_SIZE, MAX_LABELS

SOURCE_KEYS = ("dataset", "root", "train_split", "val_split", "test_split", "weight", "target", "limit", "sigma", "scale",
               "label_range")
"""Keys of one ``sources`` entry. ``sigma``: this source's fixed Gaussian std (default: the run's ``sigma``), on the
common scale; ``scale``: ``[a, b]``, the source's labels mapped to ``a * label + b`` (a common scale for sets scored
on different ones; :func:`dldl.data.samples.rescaled`); ``label_range``: ``[low, high]``, only the samples whose
truth lies inside, on the source's own scale, in every split (a range drawn more often: list the set again with it;
:func:`dldl.data.samples.within`)."""
"""The keys of one entry of ``TrainConfig.sources``; all but dataset and root default to its registry entry."""

CONSISTENCY_ON = ("estimate", "distribution")
"""What the two views of ``TrainConfig.consistency`` must agree on (``TrainConfig.consistency_on``)."""

TEACHER_TARGET = "teachers"
"""The target kind of a source labelled by the run's ``teachers`` alone (knowledge distillation on faces without
labels of the task, e.g. FairFace's photos for a beauty model): its own labels are ignored, each face's target is
the teachers' mean predicted distribution on its crop, and its expectation stands for the label. Such a source has
no validation or test split; model selection uses the sources with labels."""


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the paper's recipe at a CPU-friendly input size,
    on UTKFace's coral split; :meth:`from_sources` fills the data fields from the dataset's
    registry entry instead (``dldl train --dataset mebeauty --root DIR`` needs nothing else).

    Every value is checked here, before any file is read: a bad one raises
    :class:`~dldl.errors.ConfigError` naming the field, the value and what is allowed.
    """

    # data
    dataset: str = "utkface"  # see dldl.data.datasets.DATASETS
    root: str | None = None  # dataset folder
    train_split: str | None = "coral_train"  # None: the dataset has one list (a CSV root)
    val_split: str | None = None  # None: hold out val_fraction of train (by filename hash)
    val_fraction: float = 0.1
    test_split: str | None = "coral_test"
    limit: int | None = None  # use only the first N training samples (smoke tests)
    task: str = "age"
    labels: str = "0:100:1"  # label set start:stop:step
    sigma: float = 2.0  # Gaussian target std when the dataset gives none
    target: str = "gaussian"  # gaussian (per-face sigma where given) | gaussian_fixed (sigma for all) | histogram | interval (dldl.data.datasets.TARGETS); interval samples always get interval targets; a source of `sources` may also take "teachers" (TEACHER_TARGET)
    template: str = "utkface"  # alignment template the model's crops follow; photo datasets are aligned to it
    sources: list[dict[str, Any]] = field(default_factory=list)  # mixed training: [{dataset, root, train_split, val_split, test_split, weight, target, limit}]
    epoch_size: int | None = None  # mixed training: samples drawn per epoch (default: all training samples)
    # model
    model: str = "tiny_age_net"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # the architecture's own options, e.g. {hybrid_pool: false} (VGG family)
    input_size: int = 64
    cache_size: int | None = None  # stored crop side; default cache_size_for(input_size) = input_size * 9 // 8
    # loss
    loss: str = "dldl_v2"
    lam: float = 1.0
    kl_reduction: str = "reference"
    pearson: float = 0.0  # weight of the batch correlation term 1 - r(estimate, y) added to the loss (dldl.losses.pearson_loss)
    consistency: float = 0.0  # > 0: each batch is augmented twice; weight of mean |E[p(view 1)] - E[p(view 2)]| (dldl.losses.consistency_loss)
    consistency_on: str = "estimate"  # what the two views must agree on: estimate (mean |difference| in label units, consistency_loss) | distribution (symmetric KL, each toward the other held fixed, distribution_consistency_loss)
    kl_only_epochs: int = 0  # two-stage schedule: KL alone for these epochs, then the loss above
    teachers: list[str] = field(default_factory=list)  # distillation: trained models (checkpoints or shipped names) over `labels`
    distill: float = 0.0  # share of each target from the teachers' mean predicted distribution: (1 - distill) * own + distill * theirs
    # optimisation
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    lr_step: int = 30
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights for evaluation
    augment: AugmentConfig | None = None  # None: the paper's augmentation at input_size
    tta_flip: bool = True
    init_from: str | None = None  # start from these weights (fine-tuning; a run's EMA copy if it has one); from_sources takes its network, task, labels and template where unset (adopt_init_from); another network is refused, another head starts afresh (a warning)
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept as they are (with their batch-norm statistics), e.g. [features] for a MobileNet's backbone
    backbone_weights: str | None = None  # pre-trained backbone: "imagenet" (mobilenet_v2, efficientnet_lite0), "face_recognition" (dlib_resnet29), or a weight file
    # runtime
    out_dir: str = "runs/default"
    resume: bool = False
    overwrite: bool = False  # start again in an out_dir that holds a run (its checkpoints and logs are removed)
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    channels_last: bool = True
    save_every: int = 0  # also checkpoint every N steps (0: once per epoch)
    cache_dir: str | None = None
    workers: int = 2  # processes decoding images into the cache
    cache_on_device: bool = False  # keep the decoded uint8 training images on `device` (GPU runs: no per-step copy)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the run

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, hints[f.name], getattr(self, f.name)))
        if self.cache_size is None:
            self.cache_size = cache_size_for(self.input_size)
        check_config(self)

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> "TrainConfig":
        """The config a checkpoint was trained with (its ``"config"``); fields this dldl no longer
        has are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload["config"].items() if k in known})

    @classmethod
    def from_sources(cls, profile: str | None = None, yaml_file: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> "TrainConfig":
        """The config of a run, merged in this order (later wins): the dataclass defaults, the
        dataset's registry entry (task, labels, target, template, splits), the ``profile``
        (:data:`PROFILES`), the ``yaml_file``, then ``overrides`` (``--set`` and the CLI options;
        text values are parsed by each field's type). Raises ConfigError / DldlError in one line.
        """
        fields: dict[str, Any] = {}
        if profile is not None:
            need(profile in PROFILES, "profile", profile, f"one of {', '.join(PROFILES)}")
            fields.update(PROFILES[profile])
        if yaml_file is not None:
            path = Path(yaml_file)
            try:
                text = path.read_text()
            except FileNotFoundError:
                raise DldlError(f"{path}: config file not found") from None
            except (OSError, UnicodeDecodeError) as e:
                raise DldlError(f"{path}: cannot read the config file ({e})") from None
            loaded = load_yaml(text, str(path))
            if not isinstance(loaded, dict):
                raise DldlError(f"{path}: expected a mapping of TrainConfig fields")
            fields.update(loaded)
        fields.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise DldlError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        dataset = fields.get("dataset", cls.dataset)
        user = set(fields)
        if not fields.get("sources"):
            name = coerce("dataset", str, dataset)
            need(_known_dataset(name), "dataset", dataset, f"one of {', '.join(DATASETS)}")
            fields = {**get_dataset(name).defaults(), **fields}
        if coerce("init_from", str | None, fields.get("init_from")) is not None:
            fields = adopt_init_from(fields, user)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def adopt_init_from(fields: dict[str, Any], user: set[str]) -> dict[str, Any]:
    """``fields`` with the ``init_from`` model's network (``model``, ``model_kwargs``, ``input_size``)
    and, when its task is the run's (or the data is a CSV, which has no task of its own), its ``task``,
    ``labels`` and ``template``, each where the user
    (``user``: the fields a profile, YAML file or option set) gave none. So ``init_from=mobilenet_v2-age``
    alone fine-tunes that network with its head (ages 0-116) instead of a new head over the dataset's
    default 0-100. A model of another task (an age model on MEBeauty) keeps the dataset's labels;
    its head then starts afresh (:func:`dldl.training.train.build_model` warns).

    Raises:
        CheckpointError / DldlError: ``init_from`` is not a model file or shipped name.
    """
    from dldl.hub import checkpoint
    from dldl.models.spec import ModelSpec

    weights, payload = checkpoint(coerce("init_from", str, fields["init_from"]))
    spec = ModelSpec.from_payload(payload, weights.path)
    labels = spec.labels
    own = {"model": spec.architecture, "model_kwargs": dict(spec.model_kwargs), "input_size": spec.input_size,
           "task": spec.task, "labels": f"{labels.start:g}:{labels.stop:g}:{labels.step:g}", "template": spec.template}
    out = dict(fields)
    for name in ("model", "input_size"):
        if name not in user:
            out[name] = own[name]
    if "model_kwargs" not in user and out.get("model", TrainConfig.model) == spec.architecture:
        out["model_kwargs"] = own["model_kwargs"]
    generic = not fields.get("sources") and fields.get("dataset", TrainConfig.dataset) == "csv"  # a CSV has no task of its own
    if out.get("task", TrainConfig.task) == spec.task or ("task" not in user and generic):
        for name in ("task", "labels", "template"):
            if name not in user:
                out[name] = own[name]
    return out


# profiles: the paper's recipe on a GPU, and a small-input recipe for 2 CPU cores
PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(input_size=224, batch_size=128, epochs=60, lr_step=30),
    "cpu": dict(input_size=64, batch_size=128, epochs=30, lr_step=20, model="tiny_age_net"),
}

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_EPOCHS = 10_000
"""The most epochs a run may ask for (the paper's recipe: 60)."""
MAX_SEED = 2**63 - 1
"""Seeds are torch's: a whole number in [0, 2**63 - 1]."""


def need(ok: bool, name: str, value: Any, allowed: str) -> None:
    """The one way a rule on a value is stated: unless ``ok``, raise :class:`~dldl.errors.ConfigError`
    naming the field ``name``, its ``value`` and what is ``allowed``.

    >>> need(4 >= 1, "batch_size", 4, "a whole number >= 1")
    >>> need(-4 >= 1, "batch_size", -4, "a whole number >= 1")
    Traceback (most recent call last):
    dldl.errors.ConfigError: batch_size -4: must be a whole number >= 1
    """
    if not ok:
        raise ConfigError(name, value, allowed)


def _known_dataset(name: str) -> bool:
    """Whether the dataset registry has ``name`` (:func:`dldl.data.datasets.get_dataset`'s spelling rules)."""
    try:
        get_dataset(name)
    except DataError:
        return False
    return True


def _finite_pair(value: Any) -> bool:
    """``True`` for a list or tuple of two finite numbers (a source's ``scale`` or ``label_range``)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value))


def _label_set(text: str) -> LabelSet | None:
    """The label set ``text`` names (``start:stop[:step]``, :meth:`~dldl.labels.LabelSet.parse`), or ``None``."""
    try:
        return LabelSet.parse(text)
    except ValueError:
        return None


def check_config(cfg: TrainConfig) -> None:
    """Every rule on the values of a config (their types are already right), each a :func:`need`;
    ``model_kwargs`` are typed by the annotations of the model's factory."""
    from dldl.faces.align import TEMPLATES
    from dldl.models import list_models

    need(_known_dataset(cfg.dataset), "dataset", cfg.dataset, f"one of {', '.join(DATASETS)}")
    need(cfg.task in ("age", "beauty"), "task", cfg.task, "'age' or 'beauty'")
    trainable = [m for m in list_models() if m != "ensemble"]  # ensembles are combined from trained models
    need(cfg.model in trainable, "model", cfg.model, f"one of {', '.join(trainable)} (an ensemble is made from trained "
         "models by experiments/ensemble.py --out)")
    need(cfg.loss in OBJECTIVES, "loss", cfg.loss, f"one of {', '.join(OBJECTIVES)}")
    need(cfg.kl_reduction in ("reference", "batchmean"), "kl_reduction", cfg.kl_reduction, "'reference' or 'batchmean'")
    need(cfg.target in TARGETS, "target", cfg.target, f"one of {', '.join(TARGETS)}")
    need(cfg.template in TEMPLATES, "template", cfg.template, f"one of {', '.join(TEMPLATES)}")
    labels = _label_set(cfg.labels)
    need(labels is not None, "labels", cfg.labels, "start:stop[:step] with start < stop and step > 0, e.g. 0:100:1")
    need(labels.num_labels <= MAX_LABELS, "labels", cfg.labels, f"at most {MAX_LABELS:,} labels (this is {labels.num_labels:,})")
    for name in ("batch_size", "epochs", "lr_step"):
        need(getattr(cfg, name) >= 1, name, getattr(cfg, name), "a whole number >= 1")
    need(cfg.epochs <= MAX_EPOCHS, "epochs", cfg.epochs, f"at most {MAX_EPOCHS:,}")
    need(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, "a whole number in [0, 2**63 - 1]")
    for name in ("limit", "epoch_size", "threads"):
        need(getattr(cfg, name) is None or getattr(cfg, name) >= 1, name, getattr(cfg, name), "a whole number >= 1, or null")
    for name in ("kl_only_epochs", "save_every", "workers"):
        need(getattr(cfg, name) >= 0, name, getattr(cfg, name), "a whole number >= 0")
    need(0.0 < cfg.val_fraction < 1.0, "val_fraction", cfg.val_fraction, "a fraction between 0 and 1 (exclusive)")
    need(cfg.lr >= 0 and math.isfinite(cfg.lr), "lr", cfg.lr, "a number >= 0")
    need(0.0 < cfg.lr_gamma <= 1.0, "lr_gamma", cfg.lr_gamma, "in (0, 1]")
    need(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "a number >= 0")
    need(0.0 <= cfg.ema_decay < 1.0, "ema_decay", cfg.ema_decay, "in [0, 1)")
    need(cfg.lam >= 0 and math.isfinite(cfg.lam), "lam", cfg.lam, "a number >= 0")
    need(cfg.pearson >= 0 and math.isfinite(cfg.pearson), "pearson", cfg.pearson, "a number >= 0")
    need(cfg.consistency >= 0 and math.isfinite(cfg.consistency), "consistency", cfg.consistency, "a number >= 0")
    need(cfg.consistency_on in CONSISTENCY_ON, "consistency_on", cfg.consistency_on, f"one of {', '.join(CONSISTENCY_ON)}")
    softmax = [name for name, o in OBJECTIVES.items() if o.softmax_over_labels]
    need(cfg.consistency_on != "distribution" or cfg.loss not in OBJECTIVES or cfg.loss in softmax, "consistency_on",
         cfg.consistency_on, f"estimate with loss {cfg.loss!r} (distribution needs a softmax over the labels: {', '.join(softmax)})")
    span = labels.stop - labels.start
    need(0 <= cfg.sigma <= span, "sigma", cfg.sigma, f"a number in [0, {span:g}] (the label set's span; a wider Gaussian is flat)")
    need(0.0 <= cfg.distill <= 1.0, "distill", cfg.distill, "in [0, 1]")
    need(cfg.distill == 0 or bool(cfg.teachers), "distill", cfg.distill, "0 when no teachers are given")
    taught = [k for k, src in enumerate(cfg.sources) if isinstance(src, dict) and src.get("target") == TEACHER_TARGET]
    need(cfg.distill > 0 or not cfg.teachers or bool(taught), "teachers", cfg.teachers,
         f"empty when distill is 0 and no source takes target {TEACHER_TARGET!r}")
    for k in taught:
        need(bool(cfg.teachers), f"sources[{k}].target", TEACHER_TARGET, "set only when teachers are given (they label that source)")
    need(not taught or len(taught) < len(cfg.sources), "sources", f"{len(taught)} with target {TEACHER_TARGET!r}",
         "at least one source with labels of its own (a teacher-labelled source has no validation split)")
    need(cfg.input_size >= 32 and cfg.input_size % 32 == 0, "input_size", cfg.input_size, "a multiple of 32 (32, 64, 96, ...)")
    need(cfg.input_size <= MAX_INPUT_SIZE, "input_size", cfg.input_size, f"at most {MAX_INPUT_SIZE}")
    need(cfg.cache_size >= cfg.input_size, "cache_size", cfg.cache_size, f"at least input_size ({cfg.input_size})")
    need(cfg.cache_size <= MAX_CACHE_SIZE, "cache_size", cfg.cache_size, f"at most {MAX_CACHE_SIZE} (the stored crop side in pixels)")
    need(bool(DEVICE.fullmatch(cfg.device)), "device", cfg.device, "auto, cpu, mps, cuda or cuda:N")
    need(cfg.augment is None or cfg.augment.output_size == cfg.input_size, "augment", cfg.augment,
         f"an AugmentConfig with output_size {cfg.input_size} (input_size)")
    need(not (cfg.resume and cfg.overwrite), "overwrite", cfg.overwrite,
         "unset when resume is set (continue the run, or start it again)")
    need(not (cfg.backbone_weights and cfg.init_from), "init_from", cfg.init_from,
         "unset when backbone_weights is set (one initialisation)")
    need(all(isinstance(p, str) and p for p in cfg.freeze), "freeze", cfg.freeze,
         "a list of parameter-name prefixes, e.g. [features]")
    factory = model_factory(cfg.model)
    smallest = min_input_size(cfg.model)
    need(cfg.input_size >= smallest, "input_size", cfg.input_size, f"at least {smallest} for {cfg.model}")
    allowed = set(inspect.signature(factory).parameters) - {"num_outputs"}
    unknown = sorted(set(cfg.model_kwargs) - allowed)
    need(not unknown, "model_kwargs", cfg.model_kwargs, f"options of {cfg.model} ({', '.join(sorted(allowed)) or 'none'})")
    hints = typing.get_type_hints(factory)
    cfg.model_kwargs = {k: coerce(k, hints.get(k, Any), v) for k, v in cfg.model_kwargs.items()}
    for k, src in enumerate(cfg.sources):
        _check_source(f"sources[{k}]", src, span)


def _check_source(where: str, src: Any, span: float) -> None:
    """The rules on one entry of ``sources`` (``where``: ``sources[k]``, how errors name it; ``span``:
    the run's label set's, the widest sigma)."""
    need(isinstance(src, dict) and "dataset" in src and bool(src.get("root")), where, src,
         f"a mapping with dataset and root (and optionally {', '.join(SOURCE_KEYS[2:])})")
    extra = sorted(set(src) - set(SOURCE_KEYS))
    need(not extra, where, extra, f"keys among {', '.join(SOURCE_KEYS)}")
    need(_known_dataset(src["dataset"]), f"{where}.dataset", src["dataset"], f"one of {', '.join(DATASETS)}")
    if "weight" in src:
        need(coerce(f"{where}.weight", float, src["weight"]) > 0, f"{where}.weight", src["weight"], "a number > 0")
    kinds = (*TARGETS, TEACHER_TARGET)
    need(src.get("target") is None or src["target"] in kinds, f"{where}.target", src.get("target"), f"one of {', '.join(kinds)}")
    if "sigma" in src:
        sg = coerce(f"{where}.sigma", float, src["sigma"])
        need(0 <= sg <= span, f"{where}.sigma", src["sigma"], f"a number in [0, {span:g}] (the label set's span)")
    if "scale" in src:
        ab = src["scale"]
        need(_finite_pair(ab) and ab[0] != 0, f"{where}.scale", ab, "[a, b], finite numbers with a != 0 (labels become a * label + b)")
    if "label_range" in src:
        lh = src["label_range"]
        need(_finite_pair(lh) and lh[0] <= lh[1], f"{where}.label_range", lh, "[low, high], finite numbers with low <= high")
