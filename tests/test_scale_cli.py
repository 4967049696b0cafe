"""CLI options of issue 12: --workers, --precision, --checkpointing, synth sizes."""

import json

import pytest
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.core.video import decode_video


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--data", "DATA", "--out", "OUT", "--workers", "-1"], "--workers must be 0"),
        (["eval", "MODEL", "--data", "DATA", "--workers", "-1"], "--workers must be 0"),
        (["compress", "M", "--data", "DATA", "--out", "OUT", "--workers", "-3"], "--workers"),
        (["train", "--data", "DATA", "--out", "OUT", "--precision", "fp16"], "fp16 needs"),
        (["compress", "M", "--data", "DATA", "--out", "OUT", "--precision", "fp16"], "fp16"),
    ],
)
def test_bad_options_fail_in_one_line_before_work(tmp_path, args, fragment):
    args = [str(tmp_path / a) if a in ("DATA", "OUT", "MODEL", "M") else a for a in args]
    assert_one_line_error(run(*args), fragment)
    assert not (tmp_path / "OUT").exists()


def test_synth_writes_videos_of_the_asked_size_rate_and_length(tmp_path):
    out = tmp_path / "data"
    result = run("synth", out, "--videos", 3, "--classes", 1, "--size", 48, "--fps", 6,
                 "--min-duration", 20, "--max-duration", 24)  # fmt: skip
    assert result.exit_code == 0, result.output
    database = json.loads((out / "annotations.json").read_text())["database"]
    for video_id, entry in database.items():
        assert 20 <= entry["duration"] <= 24
        frames, fps = decode_video(out / "videos" / f"{video_id}.mp4")
        assert frames.shape[1:] == (48, 48, 3) and fps == pytest.approx(6)
        assert len(frames) == pytest.approx(entry["duration"] * 6, abs=1)
