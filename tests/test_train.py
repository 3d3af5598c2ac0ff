"""End-to-end training: loss falls, checkpoints reload exactly, resume after kill -9 is exact, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import SHARED, UTKFACE, needs_shared
from dldl.checkpoint import load_checkpoint
from dldl.data.cache import load_cached
from dldl.data.datasets import load_dataset
from dldl.evaluate import prediction_report
from dldl.runtime import Estimator
from dldl.training import TrainConfig, train


def _cfg(manifest: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset="csv", root=str(manifest), train_split=None, test_split=None, val_fraction=0.25,
                model="tiny_age_net", input_size=32, epochs=3, batch_size=8, lr=3e-3, out_dir=str(out),
                cache_dir=str(out.parent / "cache"), progress=False, workers=1, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _recomputed_val_mae(cfg: TrainConfig, best: Path) -> float:
    from dldl.training import holdout

    samples = load_dataset(cfg.dataset, cfg.root, cfg.train_split)
    _, val = holdout(samples, cfg.val_fraction)
    est = Estimator.from_checkpoint(best)
    return prediction_report(est.predict_arrays(load_cached(val, est.cache_size, cfg.cache_dir), cfg.tta_flip), val)["mae"]


def test_loss_falls_and_best_checkpoint_reloads_exactly(synthetic_manifest, tmp_path):
    cfg = _cfg(synthetic_manifest, tmp_path / "run", epochs=4)
    report = train(cfg)
    losses = [row["train_loss"] for row in report["history"]]
    assert losses[-1] < losses[0]
    # the val MAE logged from the in-memory model equals the one recomputed from the saved file
    best = min(report["history"], key=lambda r: r["val_mae"])
    assert _recomputed_val_mae(cfg, tmp_path / "run" / "best.pt") == pytest.approx(best["val_mae"], abs=1e-9)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize("family", ["tiny_age_net", "mobilenet_v2", "efficientnet_lite0"])  # one per model family
def test_resume_after_kill_reaches_the_same_weights(synthetic_manifest, tmp_path, family):
    """kill -9 mid-epoch, then --resume: bit-identical weights (dropout included), each epoch logged
    once, and no partial checkpoint left behind."""
    args = ["--dataset", "csv", "--root", str(synthetic_manifest), "--model", family, "--input-size", "32",
            "--epochs", "3", "--batch-size", "8", "--seed", "3", "--set", "train_split=null", "--set", "test_split=null",
            "--set", "save_every=1", "--set", "progress=false", "--set", f"cache_dir={tmp_path / 'cache'}",
            "--set", "workers=1", "--set", "threads=1"]
    dldl = [sys.executable, "-m", "dldl.cli"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    # the uninterrupted run and the one to kill run side by side, one thread each
    straight_run = subprocess.Popen(dldl + ["train", *args, "--out", str(full)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen(dldl + ["train", *args, "--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill -9 once a mid-training checkpoint exists
        time.sleep(0.05)
        if (cut / "last.pt").exists():
            ck = load_checkpoint(cut / "last.pt")
            if (ck["epoch"], ck["step"]) >= (0, 2):
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, err = straight_run.communicate(timeout=300)  # reads its stderr while it finishes: a full pipe cannot stall it
    assert straight_run.returncode == 0, err.decode()[-2000:]
    ck = load_checkpoint(cut / "last.pt")
    assert (ck["epoch"], ck["step"]) < (3, 0), "the run finished before it could be killed"
    # what a kill can leave: a partial checkpoint of the dead process, a log row written after the last save
    (cut / ".last.pt.999999999.tmp").write_bytes(b"partial")
    with open(cut / "log.jsonl", "a") as log:
        log.write(json.dumps({"epoch": ck["epoch"] + 1, "train_loss": 0.0}) + "\n")
    subprocess.run(dldl + ["train", *args, "--out", str(cut), "--resume"], check=True, capture_output=True)
    a, b = load_checkpoint(full / "last.pt")["state_dict"], load_checkpoint(cut / "last.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(line) for line in (cut / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    straight = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [(r["train_loss"], r["val_mae"]) for r in rows] == [(r["train_loss"], r["val_mae"]) for r in straight]
    assert not list(cut.glob(".*.tmp"))


def test_nan_loss_stops_with_message_and_keeps_checkpoint(synthetic_manifest, tmp_path):
    from dldl.errors import DldlError

    out = tmp_path / "nan"
    with pytest.raises(DldlError, match="loss became") as e:
        train(_cfg(synthetic_manifest, out, epochs=2, lr=1e30))
    # the first epoch may already diverge; whatever was saved before is a readable checkpoint
    if (out / "last.pt").exists():
        assert str(e.value).endswith(f"stopped, the last good checkpoint is {out / 'last.pt'}")
        load_checkpoint(out / "last.pt")
    else:
        assert str(e.value).endswith("stopped, no checkpoint was written yet")


def test_resume_refuses_a_checkpoint_of_other_settings(synthetic_manifest, tmp_path):
    from dldl.checkpoint import save_checkpoint
    from dldl.errors import CheckpointError

    cfg = _cfg(synthetic_manifest, tmp_path / "run", resume=True)
    save_checkpoint(tmp_path / "run" / "last.pt", {"config": {**cfg.to_dict(), "input_size": 64, "seed": 7}})
    with pytest.raises(CheckpointError, match=r"last.pt: written by a run with other settings \(input_size 64, now 32; "
                                              r"seed 7, now 1\); resume with the same settings"):
        train(cfg)


@pytest.mark.slow
def test_ddp_two_cpu_processes(synthetic_manifest, tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "dldl.cli", "train", "--dataset", "csv",
           "--root", str(synthetic_manifest), "--input-size", "32", "--epochs", "2", "--batch-size", "8",
           "--set", "train_split=null", "--set", "test_split=null", "--set", "progress=false",
           "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "workers=1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "best.pt").exists()
    rows = (out / "log.jsonl").read_text().splitlines()
    assert len(rows) == 2  # only rank 0 logs


@needs_shared
def test_tiny_age_net_on_64_utkface_faces(tmp_path):
    lst = tmp_path / "split.txt"
    names = (UTKFACE / "splits" / "coral_train.txt").read_text().splitlines()[:64]
    lst.write_text("\n".join(names) + "\n")
    cfg = TrainConfig(root=str(UTKFACE), train_split=str(lst), test_split=None, val_fraction=0.25, input_size=64,
                      epochs=3, batch_size=16, out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                      progress=False, workers=1)
    report = train(cfg)
    losses = [row["train_loss"] for row in report["history"]]
    assert losses[-1] < losses[0]
    best = min(report["history"], key=lambda r: r["val_mae"])
    assert _recomputed_val_mae(cfg, tmp_path / "run" / "best.pt") == pytest.approx(best["val_mae"], abs=1e-9)


@pytest.fixture(scope="module")
def card_cache(tmp_path_factory):
    """One decoded-image cache for the card checks: models of one input size share a split's decode."""
    return tmp_path_factory.mktemp("card_cache")


@needs_shared
@pytest.mark.parametrize("name,dataset,folder,split,card_key", [
    ("tiny_age_net-utkface", "utkface", "utkface", "coral_test", "metrics_coral_test"),
    ("thin_age_net-utkface", "utkface", "utkface", "coral_test", "metrics_coral_test"),
    ("mobilenet_v2-utkface", "utkface", "utkface", "coral_test", "metrics_coral_test"),
    ("mobilenet_v2-age", "utkface", "utkface", "full_test", "metrics_full_test"),
    ("tiny_age_net-mebeauty", "mebeauty", "mebeauty", "test", "metrics_mebeauty_test"),
    ("mobilenet_v2-mebeauty", "mebeauty", "mebeauty", "test", "metrics_mebeauty_test"),
    ("mobilenet_v2-beauty", "mebeauty", "mebeauty", "test", "metrics_mebeauty_test"),
])
def test_shipped_model_reproduces_its_card(card_cache, name, dataset, folder, split, card_key):
    """Each shipped model's card states its test metrics; re-evaluating must agree within 0.05 MAE."""
    from dldl.evaluate import evaluate
    from dldl.hub import list_pretrained, load, model_card

    if name not in list_pretrained():
        pytest.skip(f"{name} is not shipped in this checkout")
    est = load(name, runtime="onnx")  # the runtime dldl predict uses; about half torch's time on the CPU
    report = evaluate(est, load_dataset(dataset, SHARED / folder, split), card_cache)
    card = model_card(name)[card_key]
    assert abs(report["mae"] - card["mae_flip_tta"]) < 0.05
    assert abs(report["no_flip"]["mae"] - card["mae_no_tta"]) < 0.05
    if "pearson_flip_tta" in card:
        assert abs(report["pearson"] - card["pearson_flip_tta"]) < 0.01


def test_cache_on_device_trains_the_same_weights(synthetic_manifest, tmp_path):
    """Batches gathered from the device copy of the cache (cache_on_device) give the default path's weights."""
    for name, on_device in (("host", False), ("device", True)):
        train(_cfg(synthetic_manifest, tmp_path / name, epochs=1, cache_on_device=on_device))
    host, device = (load_checkpoint(tmp_path / n / "last.pt")["state_dict"] for n in ("host", "device"))
    assert host.keys() == device.keys() and all(torch.equal(host[k], device[k]) for k in host)


def test_numbers_given_as_text_are_parsed_or_refused():
    assert TrainConfig(lr="5e-4", epochs="12").lr == 5e-4  # YAML reads 5e-4 as text
    assert isinstance(TrainConfig(epochs="12").epochs, int)
    for bad in (dict(lr="fast"), dict(epochs="1.5"), dict(lr=True)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_target_kinds_use_the_faces_sigma_or_the_fixed_one():
    from dldl.data.samples import Sample, SampleList
    from dldl.labels import LabelSet
    from dldl.training import build_targets

    labels = LabelSet(1, 10, 0.5)
    samples = SampleList("s", [Sample(Path("a.jpg"), 5.0, sigma=0.5), Sample(Path("b.jpg"), 5.0, sigma=None)])
    _, own = build_targets(samples, "gaussian", 2.0, labels)
    _, fixed = build_targets(samples, "gaussian_fixed", 2.0, labels)
    width = lambda p: float((p * (torch.as_tensor(labels.values()).float() - 5.0) ** 2).sum().sqrt())  # noqa: E731
    assert width(own[0]) < 0.8 < 1.6 < width(own[1])  # the face's 0.5, the default 2.0 where it has none
    assert abs(width(fixed[0]) - width(fixed[1])) < 1e-6 and width(fixed[0]) > 1.6


def test_init_from_starts_from_the_weights_the_checkpoint_is_evaluated_with(tmp_path):
    """A run's checkpoint is evaluated with its EMA copy; fine-tuning from it starts there too, not
    from the noisier training weights (a shipped file, with no EMA copy, gives its only weights)."""
    from dldl.checkpoint import save_checkpoint
    from dldl.labels import LabelSet
    from dldl.models.spec import ModelSpec
    from dldl.training import Process, build_model

    spec = ModelSpec("tiny_age_net", LabelSet.parse("0:10:1"), "dldl_v2", 32)
    trained, averaged = spec.create_model().state_dict(), spec.create_model().state_dict()
    for with_ema in (True, False):
        path = save_checkpoint(tmp_path / f"{with_ema}.pt",
                               {"state_dict": trained, "ema_state_dict": averaged if with_ema else None})
        cfg = TrainConfig(model="tiny_age_net", labels="0:10:1", input_size=32, init_from=str(path))
        got = build_model(cfg, spec, Process(torch.device("cpu")), None, resuming=False).state_dict()
        want = averaged if with_ema else trained
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert not all(torch.equal(got[k], (trained if with_ema else averaged)[k]) for k in want if k.endswith("weight"))


def test_distillation_targets_mix_the_teachers_mean_distribution(tiny_run):
    from dldl.errors import ConfigError
    from dldl.labels import LabelSet
    from dldl.training import build_targets, load_sources, load_training_data, teacher_distribution

    teacher = tiny_run / "run" / "best.pt"
    (manifest,) = (tiny_run / "data").glob("*.csv")
    cfg = TrainConfig(dataset="csv", root=str(manifest), train_split=None, test_split=None, val_fraction=0.25, input_size=32,
                      cache_dir=str(tiny_run / "cache"), workers=1, progress=False, teachers=[str(teacher)] * 2, distill=0.25)
    sources, labels = load_sources(cfg), LabelSet.parse(cfg.labels)
    data = load_training_data(cfg, sources, labels, lambda s: load_cached(s, 36, cfg.cache_dir, 1), True)
    own = build_targets(sources[0].train, cfg.target, cfg.sigma, labels)[1]
    theirs = torch.from_numpy(Estimator.from_checkpoint(teacher).predict_arrays(data.images).distribution).to(own.dtype)
    assert not torch.allclose(own, theirs, atol=1e-3)  # so the mix below can tell them apart
    assert torch.allclose(data.target, 0.75 * own + 0.25 * theirs, atol=1e-6)
    assert torch.allclose(data.target.sum(1), torch.ones(len(own), dtype=own.dtype), atol=1e-5)

    with pytest.raises(ConfigError, match=r"teachers .*over the run's labels \(0:50:1\); this one has dldl_v2 over 0:100:1"):
        teacher_distribution([str(teacher)], data.images, LabelSet.parse("0:50:1"), "utkface")
    with pytest.raises(ConfigError, match="crop template 'mebeauty', not 'utkface'"):
        teacher_distribution([str(teacher)], data.images, labels, "mebeauty")
    with pytest.raises(ConfigError, match="distill 0.5: must be 0 when no teachers are given"):
        TrainConfig(distill=0.5)
    with pytest.raises(ConfigError, match="teachers .*: must be empty when distill is 0"):
        TrainConfig(teachers=["a.pt"])


def test_a_taught_source_takes_the_teachers_distribution_and_has_no_validation_split(tiny_run):
    from dldl.errors import ConfigError
    from dldl.labels import LabelSet, expectation
    from dldl.training import build_targets, load_sources, load_training_data, model_spec

    teacher = tiny_run / "run" / "best.pt"
    (manifest,) = (tiny_run / "data").glob("*.csv")
    labelled = {"dataset": "csv", "root": str(manifest), "train_split": None, "test_split": None}
    taught = {**labelled, "target": "teachers", "limit": 10, "weight": 0.5}
    cfg = TrainConfig(sources=[labelled, taught], val_fraction=0.25, input_size=32, cache_dir=str(tiny_run / "cache"),
                      workers=1, progress=False, teachers=[str(teacher)])
    sources, labels = load_sources(cfg), LabelSet.parse(cfg.labels)
    assert [s.taught for s in sources] == [False, True]
    assert len(sources[1].train) == 10 and len(sources[1].val) == 0 and sources[1].test is None
    data = load_training_data(cfg, sources, labels, lambda s: load_cached(s, 36, cfg.cache_dir, 1), True)
    n = len(sources[0].train)
    assert data.val_images[0] is not None and data.val_images[1] is None
    y, own = build_targets(sources[0].train, cfg.target, cfg.sigma, labels)
    assert torch.allclose(data.target[:n], own.to(data.target.dtype)) and torch.equal(data.y[:n], y)  # distill 0: own targets
    theirs = torch.from_numpy(Estimator.from_checkpoint(teacher).predict_arrays(data.images[n:]).distribution)
    assert torch.allclose(data.target[n:], theirs.to(data.target.dtype), atol=1e-6)
    assert torch.allclose(data.y[n:], expectation(theirs.double(), labels).float(), atol=1e-4)
    assert torch.equal(data.low[n:], data.y[n:]) and torch.equal(data.high[n:], data.y[n:])
    # the spec's label range comes from the labelled faces only
    truth = [b for s in sources[0].train.samples for b in s.bounds]
    assert model_spec(cfg, sources).label_range == (min(truth), max(truth))

    with pytest.raises(ConfigError, match=r"sources\[1\].target 'teachers': must be set only when teachers are given"):
        TrainConfig(sources=[labelled, taught])
    with pytest.raises(ConfigError, match="must be at least one source with labels of its own"):
        TrainConfig(sources=[taught], teachers=["a.pt"])
    TrainConfig(sources=[labelled, taught], teachers=["a.pt"])  # teachers with distill 0 are fine when a source is taught


def test_pearson_term_is_added_to_the_training_loss(synthetic_manifest, tmp_path):
    """lr 0: both runs see the same weights and batches, so the logged losses differ by the weighted 1 - r alone."""
    plain, with_term = (train(_cfg(synthetic_manifest, tmp_path / name, epochs=1, lr=0.0, pearson=w))["history"][0]["train_loss"]
                        for name, w in (("plain", 0.0), ("pearson", 2.0)))
    assert 0.0 < with_term - plain < 2.0 * 2.0


@pytest.mark.parametrize("on, weight", [("estimate", 0.0), ("estimate", 2.0), ("distribution", 2.0)])
def test_consistency_compares_two_augmented_views_of_each_face(synthetic_manifest, tmp_path, monkeypatch, on, weight):
    """consistency > 0: each batch goes through the network twice, two draws of the augmentation of
    the same faces, and the term of ``consistency_on`` (the estimates' mean |difference|, or the
    distributions' symmetric KL) joins the loss at that weight, the other term never; at 0 the batch
    goes once and no term is computed."""
    import importlib

    train_module = importlib.import_module("dldl.training.train")  # the module; dldl.training.train is the function
    seen = {"estimate": [], "distribution": []}
    for kind, name in (("estimate", "consistency_loss"), ("distribution", "distribution_consistency_loss")):
        real = getattr(train_module, name)

        def spy(a, b, real=real, kind=kind):
            value = real(a, b)
            seen[kind].append((tuple(a.shape), tuple(b.shape), bool(torch.equal(a, b)), float(value.detach())))
            return value

        monkeypatch.setattr(train_module, name, spy)
    aug = {"output_size": 32, "blur": 0.5, "jpeg": 0.5, "noise": 0.5}
    train(_cfg(synthetic_manifest, tmp_path / "run", epochs=1, consistency=weight, consistency_on=on, augment=aug))
    if weight == 0:
        assert seen == {"estimate": [], "distribution": []}
        return
    calls, other = seen[on], seen["distribution" if on == "estimate" else "estimate"]
    assert other == []
    dims = 1 if on == "estimate" else 2  # (B,) estimates or (B, K) logits, B <= batch_size
    assert calls and all(a == b and len(a) == dims and a[0] <= 8 for a, b, _, _ in calls)
    assert not all(same for _, _, same, _ in calls) and all(v >= 0 for *_, v in calls)  # the two draws differ
