"""benchmarks/cli_vs_peer.py: whole-process timings of dldl predict, the report renders without the peer."""

import cli_vs_peer
import pytest

from dldl.assets import PHOTOS_DIR


@pytest.mark.skipif(not cli_vs_peer.shutil.which("dldl"), reason="the dldl command is not installed")
def test_times_dldl_predict_as_a_process(tmp_path):
    result = cli_vs_peer.run(PHOTOS_DIR, count=2, repeats=1, peer=tmp_path / "no-such-python")
    d = result["median"]["dldl"]
    assert set(result["median"]) == {"dldl"} and result["ratios"] is None
    assert d["folder"]["wall_s"] > 0 and d["one"]["cpu_s"] > 0 and d["folder"]["peak_mb"] > 50
    text = cli_vs_peer.markdown(result)
    assert "the peer was not installed" in text and "start-up to the first result" in text
    assert "CPU per photo" not in text  # no ratio without the peer


def test_prepare_resizes_to_the_working_side(tmp_path):
    from PIL import Image

    files = cli_vs_peer.prepare(PHOTOS_DIR, 2, tmp_path)
    assert [max(Image.open(f).size) for f in files] == [cli_vs_peer.SIDE] * 2
