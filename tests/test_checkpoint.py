import os
import pickle
from pathlib import Path

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

    def fills_the_disk(obj, f, *a, **k):  # what torch does on a full disk: part of the file, then an error
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(CheckpointError, match=f"^{p}: could not be written .*PytorchStreamWriter failed writing file.*; "
                                              "the previous file is kept$"):
        save_checkpoint(p, {"epoch": 2})
    assert load_checkpoint(p)["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp"))


def test_stale_temporary_files_are_removed(tmp_path):
    from dldl.files import remove_stale_temps

    dead, live = tmp_path / ".last.pt.999999999.tmp", tmp_path / f".last.pt.{os.getpid()}.tmp"
    for p in (dead, live, tmp_path / "keep.tmp"):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "keep.tmp"])


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
