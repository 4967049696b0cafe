"""OpenTAD config files are read, never executed, with their `_base_` chain merged."""

import json
from pathlib import Path

import pytest

from pbd_deploy.errors import PbdError
from pbd_deploy.models.convert import ConvertConfig, convert_checkpoint
from pbd_deploy.models.opentad_config import UNKNOWN, get, read_opentad_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opentad"


def test_base_chain_merges_like_mmengine(tmp_path):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "model.py").write_text(
        "model = dict(type='ActionFormer', projection=dict(in_channels=2048, out_channels=512,"
        " attn_cfg=dict(n_head=4, n_mha_win_size=19)), neck=dict(num_levels=6))\n"
    )
    (tmp_path / "child.py").write_text(
        "_base_ = ['_base_/model.py']\n"
        "window_size = 768\n"
        "chunk_num = window_size * 1 // 16\n"
        "model = dict(projection=dict(in_channels=384, max_seq_len=window_size,"
        " attn_cfg=dict(n_mha_win_size=-1)), backbone=dict(adapter_index=list(range(12))),"
        " neck=dict(_delete_=True, type='FPNIdentity'))\n"
        "work_dir = f'exps/{window_size}'\n"
    )
    cfg = read_opentad_config(tmp_path / "child.py")
    assert get(cfg, "model.type") == "ActionFormer"  # from the base
    assert get(cfg, "model.projection.out_channels") == 512  # base key kept
    assert get(cfg, "model.projection.in_channels") == 384  # child overrides
    assert get(cfg, "model.projection.attn_cfg") == {"n_head": 4, "n_mha_win_size": -1}
    assert get(cfg, "model.projection.max_seq_len") == 768 and get(cfg, "chunk_num") == 48
    assert get(cfg, "model.backbone.adapter_index") == list(range(12))
    assert get(cfg, "model.neck") == {"type": "FPNIdentity"}  # _delete_ replaces
    assert cfg["work_dir"] is UNKNOWN and get(cfg, "work_dir", "none") == "none"


def test_code_in_a_config_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(
        f"import os\nx = open({str(marker)!r}, 'w')\nos.system('touch {marker}')\nwindow_size = 8\n"
    )
    cfg = read_opentad_config(tmp_path / "evil.py")
    assert not marker.exists()
    assert cfg["x"] is UNKNOWN and cfg["window_size"] == 8


def test_missing_base_and_bad_syntax_are_one_line_errors(tmp_path):
    (tmp_path / "a.py").write_text("_base_ = ['missing.py']\n")
    with pytest.raises(PbdError, match="missing.py does not exist"):
        read_opentad_config(tmp_path / "a.py")
    (tmp_path / "b.py").write_text("model = dict(\n")
    with pytest.raises(PbdError, match="not valid Python"):
        read_opentad_config(tmp_path / "b.py")


def test_model_of_another_width_is_refused(tmp_path):
    meta = json.loads((FIXTURES / "adatad_global.json").read_text())
    (tmp_path / "cfg.py").write_text(f"window_size = 64\nmodel = {meta['model']!r}\n")
    config = ConvertConfig(opentad_config=str(tmp_path / "cfg.py"), model="videomae-s")
    with pytest.raises(PbdError, match="width 32, 4 blocks; --model videomae-s is width 384"):
        convert_checkpoint(FIXTURES / "adatad_global.pth", meta["classes"], config)
