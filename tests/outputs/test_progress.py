"""Progress in redirected logs: plain lines (no carriage returns), one per tenth of the way."""

from __future__ import annotations

from eomt.outputs.progress import PlainProgress, progress_bar


def test_redirected_progress_is_plain_lines(capsys):
    bar = progress_bar(50, "eomt eval (panoptic)", "img")  # pytest's stderr is not a terminal
    assert isinstance(bar, PlainProgress)
    with bar:
        for _ in range(50):
            bar.set_postfix(loss="0.123")
            bar.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 10 and lines[-1] == "eomt eval (panoptic): 50/50 img (100%), loss=0.123"


def test_disabled_progress_prints_nothing(capsys):
    bar = progress_bar(5, "x", "steps", enabled=False, initial=2)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""
