"""Ensembles of trained models (dldl.models.ensemble): one checkpoint, the mean of the members' distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dldl.checkpoint import load_checkpoint, save_checkpoint
from conftest import REPO
from dldl.errors import ConfigError, DldlError
from dldl.export import export
from dldl.runtime import Estimator
from dldl.hub import combine
from dldl.models.spec import ModelSpec
from dldl.hub import load
from dldl.training import TrainConfig


@pytest.fixture(scope="module")
def members(tiny_run, tmp_path_factory):
    """The tiny run's model, and a copy with other weights and temperature 0.5."""
    first = tiny_run / "run" / "best.pt"
    ck = load_checkpoint(first)
    gen = torch.Generator().manual_seed(0)
    for key in ("state_dict", "ema_state_dict"):
        if ck.get(key):
            ck[key] = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                       for k, v in ck[key].items()}
    ck["spec"] = ModelSpec.from_payload(ck, first).replace(temperature=0.5).to_dict()
    second = tmp_path_factory.mktemp("members") / "second.pt"
    save_checkpoint(second, {k: v for k, v in ck.items() if k not in ("format", "format_version")})
    return first, second


def test_ensemble_estimate_is_the_mean_of_its_members(members, tmp_path):
    path = save_checkpoint(tmp_path / "ens.pt", combine(list(members)))
    ens = Estimator.from_checkpoint(path)
    a, b = (Estimator.from_checkpoint(m) for m in members)
    assert a.spec.temperature != b.spec.temperature  # each member keeps its own
    imgs = np.random.default_rng(0).integers(0, 255, (6, ens.cache_size, ens.cache_size, 3), dtype=np.uint8)
    for flip in (False, True):
        pa, pb, pe = (e.predict_arrays(imgs, tta_flip=flip) for e in (a, b, ens))
        assert np.abs(pe.distribution - (pa.distribution + pb.distribution) / 2).max() < 1e-5
        assert np.abs(pe.estimate - (pa.estimate + pb.estimate) / 2).max() < 1e-3
    assert ens.spec.model_kwargs == {"members": f"{a.spec.architecture},{b.spec.architecture}"}
    assert (ens.labels, ens.template, ens.input_size) == (a.labels, a.template, a.input_size)


def test_ensemble_exports_to_onnx(members, tmp_path):
    ens = Estimator.from_checkpoint(save_checkpoint(tmp_path / "ens.pt", combine(list(members))))
    other = load(export(ens, tmp_path / "ens.onnx", "onnx"))
    imgs = np.random.default_rng(1).integers(0, 255, (5, ens.cache_size, ens.cache_size, 3), dtype=np.uint8)
    assert np.abs(ens.predict_arrays(imgs).distribution - other.predict_arrays(imgs).distribution).max() < 1e-4


def _changed(src, dst, **spec_change):
    ck = load_checkpoint(src)
    ck["spec"] = ModelSpec.from_payload(ck, src).replace(**spec_change).to_dict()
    return save_checkpoint(dst, {k: v for k, v in ck.items() if k not in ("format", "format_version")})


@pytest.mark.parametrize("change, problem", [
    ({"template": "mebeauty"}, "template 'mebeauty' differs from"),
    ({"task": "beauty"}, "task 'beauty' differs from"),
    ({"input_size": 40, "cache_size": 44}, "input_size 40 differs from"),
])
def test_members_that_do_not_fit_are_refused_in_one_line(members, tmp_path, change, problem):
    odd = _changed(members[0], tmp_path / "odd.pt", **change)
    with pytest.raises(DldlError, match=problem) as e:
        combine([members[0], odd])
    assert str(odd) in str(e.value) and "\n" not in str(e.value)


def test_ensembles_need_two_softmax_members(members, tmp_path):
    with pytest.raises(DldlError, match="at least two models"):
        combine([members[0]])
    with pytest.raises(DldlError, match="neither a file nor a shipped model"):
        combine([members[0], "no-such-model"])
    nested = save_checkpoint(tmp_path / "ens.pt", combine(list(members)))
    with pytest.raises(DldlError, match="is an ensemble already"):
        combine([members[0], nested])
    with pytest.raises(ConfigError, match="an ensemble is made from trained models"):
        TrainConfig(model="ensemble")


def test_the_script_never_replaces_a_file(members, tmp_path):
    import subprocess
    import sys

    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"mine")
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "ensemble.py"), *map(str, members), "--out", str(kept)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "exists already" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert kept.read_bytes() == b"mine"
