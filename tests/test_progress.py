"""Progress in a log (stderr not a terminal): plain lines, one per epoch and finished stage."""

import re

from pbd_deploy.cli.base import RichProgress


def test_plain_lines_when_stderr_is_not_a_terminal(capsys):
    with RichProgress() as progress:
        for step in range(1, 5):
            progress("synthesise videos", step, 4)
        for epoch in (1, 2):
            for step in range(1, 4):
                progress("train", 3 * (epoch - 1) + step, 6, epoch=epoch, loss=1.0 / step)
            progress("epoch", epoch, 2, epoch=epoch, loss=0.5, val_mAP=0.25, elapsed_s=3.0)
        progress("recover 1", 1, 3, val_mAP=0.125)
    out = capsys.readouterr()
    assert out.out == ""
    lines = [re.sub(r"^\[ *[0-9.]+s\] ", "", line) for line in out.err.splitlines()]
    assert lines == [
        "synthesise videos 4/4",
        "epoch 1/2 epoch=1 loss=0.5 val_mAP=0.25",
        "train 6/6 epoch=2 loss=0.3333",
        "epoch 2/2 epoch=2 loss=0.5 val_mAP=0.25",
        "recover 1 1/3 val_mAP=0.125",
    ]
    assert "…" not in out.err and "\x1b" not in out.err
