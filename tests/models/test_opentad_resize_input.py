"""`convert` with an ActivityNet OpenTAD config selects the whole-video resize input."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.errors import PbdError
from pbd_deploy.models.convert import ConvertConfig, convert_checkpoint
from pbd_deploy.models.detector import InputConfig
from pbd_deploy.models.opentad_arch import _input_from_config
from pbd_deploy.models.opentad_config import opentad_preset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opentad"
META = json.loads((FIXTURES / "adatad_abs_pe.json").read_text())  # 64 frames, 64 points


def config_file(folder: Path, resize_length: int = 64, scale_factor: int = 1, **sections) -> Path:
    """The fixture's model with an ActivityNet-style test pipeline (as in OpenTAD's
    configs/adatad/anet/*_adapter.py, at the fixture's size) and the given top-level
    sections (post_processing, ...)."""
    path = folder / "anet_tiny.py"
    path.write_text(
        f"model = {META['model']!r}\n"
        f"dataset = dict(test=dict(type='AnetResizeDataset', resize_length={resize_length},\n"
        "    pipeline=[\n"
        "        dict(type='PrepareVideoInfo', format='mp4', prefix='v_'),\n"
        f"        dict(type='LoadFrames', num_clips=1, method='resize', scale_factor={scale_factor}),\n"
        "        dict(type='mmaction.DecordDecode'),\n"
        "        dict(type='mmaction.Resize', scale=(-1, 32)),\n"
        "        dict(type='mmaction.CenterCrop', crop_size=32)]))\n"
        + "".join(f"{key} = {value!r}\n" for key, value in sections.items())
    )  # fmt: skip
    return path


@pytest.mark.parametrize("size", ["s", "b", "l", "h"])
def test_anet_presets_resize_each_video_to_192_x_4_frames(size):
    cfg = opentad_preset(f"adatad-anet-videomae-{size}")
    inp = _input_from_config(cfg, InputConfig(fps=7.5), 768)
    assert (inp.sampling, inp.window, inp.stride, inp.fps) == ("resize", 768, 768, None)
    assert (inp.resize, inp.crop) == (160, 160)
    thumos = _input_from_config(
        opentad_preset(f"adatad-thumos-videomae-{size}"), InputConfig(), 768
    )
    assert (thumos.sampling, thumos.stride, thumos.frame_stride) == ("stride", 384, 4)


def test_convert_with_an_anet_config_gives_a_resize_model(tmp_path):
    config = ConvertConfig(opentad_config=str(config_file(tmp_path)))
    model, _ = convert_checkpoint(FIXTURES / "adatad_abs_pe.pth", META["classes"], config)
    inp = model.config.input
    assert (inp.sampling, inp.window, inp.stride, inp.fps) == ("resize", 64, 64, None)
    assert (inp.resize, inp.crop, model.config.head.length) == (32, 32, 64)


def test_a_config_that_does_not_fit_together_is_refused(tmp_path):
    config = ConvertConfig(opentad_config=str(config_file(tmp_path, 16, 4)))
    with pytest.raises(PbdError, match="resize_length.*max_seq_len"):
        convert_checkpoint(FIXTURES / "adatad_abs_pe.pth", META["classes"], config)
    config = ConvertConfig(opentad_config=str(config_file(tmp_path, 32, 1)))
    with pytest.raises(PbdError, match="resizes each video to 32 frames but its backbone takes 64"):
        convert_checkpoint(FIXTURES / "adatad_abs_pe.pth", META["classes"], config)


def test_fps_with_a_resize_config_is_one_line_exit_2(tmp_path):
    args = ["convert", str(FIXTURES / "adatad_abs_pe.pth"), "--opentad-config",
            str(config_file(tmp_path)), "--classes", ",".join(META["classes"]),
            "--fps", "15", "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--fps does not apply here" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
