"""Config checked before any work (``TrainConfig.from_sources``) and the ``ModelSpec`` record
round-tripping through a ``.pt`` checkpoint, an ONNX export and a model card."""

from __future__ import annotations

import json
import sys

import pytest

from dldl.checkpoint import load_checkpoint
from dldl.cli import run
from dldl.errors import ConfigError
from dldl.labels import LabelSet
from dldl.models.spec import ModelSpec
from dldl.training import TrainConfig

BAD = [
    ("model=tiny_age_nett", "model 'tiny_age_nett': must be one of"),
    ("kl_reduction=mean", "kl_reduction 'mean': must be 'reference' or 'batchmean'"),
    ("task=Age", "task 'Age': must be 'age' or 'beauty'"),
    ("dataset=utkfase", "dataset 'utkfase': must be one of csv, utkface"),
    ("batch_size=0", "batch_size 0: must be a whole number >= 1"),
    ("batch_size=-4", "batch_size -4: must be a whole number >= 1"),
    ("epochs=-1", "epochs -1: must be a whole number >= 1"),
    ("lr_step=0", "lr_step 0: must be a whole number >= 1"),
    ("limit=-5", "limit -5: must be a whole number >= 1, or null"),
    ("model_kwargs={hybrid_pool: maybe}", "hybrid_pool 'maybe': must be true or false"),
    ("resume=abc", "resume 'abc': must be true or false"),
    ("val_fraction=1.5", "val_fraction 1.5: must be a fraction between 0 and 1"),
    ("cache_size=8", "cache_size 8: must be at least input_size (64)"),
    ("threads=-1", "threads -1: must be a whole number >= 1, or null"),
    ("device=tpu", "device 'tpu': must be auto, cpu, mps, cuda or cuda:N"),
    ("batch_size=4.5", "batch_size '4.5': must be a whole number"),
    ("lr=fast", "lr 'fast': must be a number"),
    ("pearson=-0.5", "pearson -0.5: must be a number >= 0"),
    ("consistency=-0.5", "consistency -0.5: must be a number >= 0"),
    ("consistency_on=logits", "consistency_on 'logits': must be one of estimate, distribution"),
    ("template=celeba", "template 'celeba': must be one of"),
    ("sources=[{dataset: aaf}]", "sources[0]"),
    ("sources=[{dataset: aaf, root: x, target: teachers}]", "sources[0].target 'teachers': must be set only when teachers are given"),
    ("sources=[{dataset: aaf, root: x, target: teacher}]", "sources[0].target 'teacher': must be one of gaussian, gaussian_fixed, histogram, interval, teachers"),
    ("model_kwargs={width: 2}", "model_kwargs {'width': 2}: must be options of tiny_age_net (hybrid_pool)"),
    ("sigma=1e308", "sigma 1e+308: must be a number in [0, 100] (the label set's span; a wider Gaussian is flat)"),
]

BOUNDS = [  # each was accepted (and ran, or failed later with a traceback) before it had a bound
    (dict(sigma=1e308), "sigma 1e+308: must be a number in [0, 100]"),  # was a ValueError inside the targets (exit 3)
    (dict(labels="1:10:0.1", sigma=12), "sigma 12.0: must be a number in [0, 9]"),
    (dict(seed=10**23), "seed 100000000000000000000000: must be a whole number in [0, 2**63 - 1]"),  # torch overflow (exit 3)
    (dict(seed=-1), "seed -1: must be a whole number in [0, 2**63 - 1]"),
    (dict(seed="100000000000000000000000"), "seed 100000000000000000000000: must be"),
    (dict(labels="0:1e9"), "labels '0:1e9': must be at most 10,000 labels (this is 1,000,000,001)"),  # a 224 GB allocation (exit 3)
    (dict(cache_size=99999), "cache_size 99999: must be at most 2048 (the stored crop side in pixels)"),  # MemoryError (exit 3)
    (dict(epochs=10**18), "epochs 1000000000000000000: must be at most 10,000"),  # trained on, for ever
    (dict(epochs="1e18"), "epochs 1000000000000000000: must be at most 10,000"),
    (dict(input_size=4096), "input_size 4096: must be at most 1024"),  # refused only after the data was decoded (exit 3)
    (dict(sources=[{"dataset": "csv", "root": "x.csv", "sigma": 1e308}]), "sources[0].sigma 1e+308: must be a number in [0, 100]"),
    (dict(consistency=1.0, consistency_on="distribution", loss="ranking"),  # a softmax of the ranking outputs: a meaningless term
     "consistency_on 'distribution': must be estimate with loss 'ranking' (distribution needs a softmax over the labels: dldl_v2, dldl, softmax, expectation_l1)"),
]


@pytest.mark.parametrize("fields, message", BOUNDS, ids=[",".join(f"{k}={v}"[:24] for k, v in f.items()) for f, _ in BOUNDS])
def test_every_size_and_number_has_a_bound(fields, message):
    """Values that are well-typed but absurd are one ConfigError line, before anything is read or allocated."""
    with pytest.raises(ConfigError) as e:
        TrainConfig(**fields)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_bounds_keep_every_shipped_recipe():
    """The largest settings dldl's own recipes use stay inside the bounds."""
    TrainConfig(input_size=1024, cache_size=2048, epochs=10_000, seed=2**63 - 1, labels="0:116:1", sigma=3)
    TrainConfig(labels="1:10:0.1", sigma=1.86)
    TrainConfig.from_sources("paper")


@pytest.mark.parametrize("setting,message", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_before_any_image_is_read(setting, message, tmp_path, monkeypatch, capsys):
    # a root with no images at all: any attempt to read data would fail with another message
    monkeypatch.setattr(sys, "argv", ["dldl", "train", "--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"),
                                      "--set", setting])
    with pytest.raises(SystemExit) as e:
        run()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert message in err[0], err[0]
    assert not (tmp_path / "run").exists()


def test_registry_supplies_the_dataset_defaults():
    cfg = TrainConfig.from_sources(overrides={"dataset": "mebeauty", "root": "x"})
    assert (cfg.task, cfg.labels, cfg.template, cfg.train_split, cfg.val_split, cfg.test_split) == (
        "beauty", "1:10:0.1", "mebeauty", "train", "val", "test")
    assert TrainConfig.from_sources("cpu").input_size == 64  # profiles still apply
    assert TrainConfig.from_sources(overrides={"dataset": "mebeauty", "template": "utkface"}).template == "utkface"


def test_yaml_aliases_are_refused(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nextra: {k: *b}\n')
    with pytest.raises(Exception, match="YAML aliases are not allowed"):
        TrainConfig.from_sources(yaml_file=bomb)


def test_text_values_are_typed_by_annotation():
    cfg = TrainConfig(lr="5e-4", epochs="3", resume="yes", limit="null", augment={"output_size": 64, "blur": 0.5})
    assert (cfg.lr, cfg.epochs, cfg.resume, cfg.limit, cfg.augment.blur) == (5e-4, 3, True, None, 0.5)
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment={"output_size": 64, "blurr": 0.5})


def test_user_errors_are_config_errors_but_a_bug_is_not_hidden(tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr("dldl.predictor.expand_paths", boom)
    monkeypatch.setattr(sys, "argv", ["dldl", "predict", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        run()
    err = capsys.readouterr().err
    assert e.value.code == 3 and "internal error" in err and "--debug" in err and "Traceback" not in err


# --------------------------------------------------------------------------- ModelSpec


def test_spec_round_trips_through_pt_onnx_and_card(tmp_path):
    pytest.importorskip("onnxruntime")
    from dldl.checkpoint import save_checkpoint
    from dldl.export import export
    from dldl.hub import install, load
    from dldl.runtime import Estimator, load_exported

    spec = ModelSpec("tiny_age_net", LabelSet(0, 80, 1), "dldl_v2", 64, "age", "utkface", {"hybrid_pool": False},
                     label_range=(2.0, 80.0))
    model = spec.create_model()
    pt = save_checkpoint(tmp_path / "best.pt", {"spec": spec.to_dict(), "state_dict": model.state_dict()})
    assert ModelSpec.from_payload(load_checkpoint(pt)) == spec
    est = Estimator.from_checkpoint(pt)
    assert est.spec == spec and est.template == "utkface" and est.cache_size == 72
    onnx = export(est, tmp_path / "m.onnx")
    assert load_exported(onnx).spec == spec
    shipped = install(pt, "toy", {"summary": "toy"}, tmp_path)
    card = json.loads(shipped.with_suffix(".json").read_text())
    assert ModelSpec.from_dict(card["spec"]) == spec == ModelSpec.from_payload(load_checkpoint(shipped))
    assert load(shipped).spec == spec


def test_spec_refuses_a_wrong_width_and_old_files_still_load(tmp_path):
    d = ModelSpec("tiny_age_net", LabelSet(0, 10, 1)).to_dict()
    with pytest.raises(ValueError, match="needs 11 outputs, the spec says 12"):
        ModelSpec.from_dict({**d, "num_outputs": 12})
    old = {"model": {"name": "thin_age_net", "num_outputs": 101, "hybrid_pool": True}, "labels": LabelSet(0, 100, 1).to_dict(),
           "loss": "dldl_v2", "task": "beauty", "input_size": 64, "cache_size": 72}
    spec = ModelSpec.from_payload(old)
    assert spec.template == "mebeauty" and spec.model_kwargs == {"hybrid_pool": True}


def test_shipped_cards_carry_the_spec_of_their_file():
    from dldl.assets import MODELS_DIR
    from dldl.hub import list_pretrained, model_card

    if not list_pretrained():
        pytest.skip("no shipped model in this checkout")
    for name in list_pretrained():
        card = ModelSpec.from_dict(model_card(name)["spec"])
        own = ModelSpec.from_payload(load_checkpoint(MODELS_DIR / f"{name}.pt"))
        assert card.replace(label_range=None, temperature=1.0) == own.replace(label_range=None, temperature=1.0), name


def test_out_dir_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    from dldl.errors import DldlError
    from dldl.training import run_lock

    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"previous run")
    with pytest.raises(DldlError, match=r"holds a run \(last.pt\); --resume continues it, --overwrite starts it again"):
        with run_lock(out, TrainConfig()):
            pass
    assert (out / "last.pt").read_bytes() == b"previous run" and not (out / ".lock").exists()
    with run_lock(out, TrainConfig(resume=True)):
        assert (out / ".lock").read_text() == str(__import__("os").getpid())
        with pytest.raises(DldlError, match="another run .process [0-9]+. is training into this folder"):
            with run_lock(out, TrainConfig(resume=True)):
                pass
    with run_lock(out, TrainConfig(overwrite=True)):
        assert not (out / "last.pt").exists()
    (out / ".lock").write_text("999999999")  # left by a killed run: taken over
    with run_lock(out, TrainConfig()):
        pass
    with pytest.raises(ConfigError, match="overwrite True: must be unset when resume is set"):
        TrainConfig(resume=True, overwrite=True)
