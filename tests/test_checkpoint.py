import os
import pickle

import pytest
import torch

from dldl.checkpoint import load_checkpoint, save_checkpoint
from dldl.errors import CheckpointError


def test_roundtrip(tmp_path):
    p = save_checkpoint(tmp_path / "a" / "x.pt", {"state_dict": {"w": torch.ones(3)}, "epoch": 2})
    ck = load_checkpoint(p)
    assert ck["epoch"] == 2 and torch.equal(ck["state_dict"]["w"], torch.ones(3)) and ck["format"] == "dldl"
    assert not list(p.parent.glob(".*tmp"))  # no temp file left behind


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "x.pt", {"epoch": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(p, {"epoch": 2})
    assert load_checkpoint(p)["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("damage,problem", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or corrupted"),
    (lambda p: p.write_bytes(b"\x00" * 64), "truncated or corrupted"),
])
def test_damaged_files_are_reported(tmp_path, damage, problem):
    p = save_checkpoint(tmp_path / "x.pt", {"state_dict": {"w": torch.randn(1000)}})
    damage(p)
    with pytest.raises(CheckpointError, match=problem) as e:
        load_checkpoint(p)
    assert "x.pt" in str(e.value)


def test_foreign_files_are_refused(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a dldl checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_is_never_unpickled(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "dldl", "payload": _Evil()}, p, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(p)
