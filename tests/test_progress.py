"""Command-line progress: a bar on a terminal, periodic plain lines in a log, silence when quiet."""

import io

import pytest

from engine import progress
from engine.progress import Progress, Stages, stage


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _loud():
    progress.configure(quiet=False)
    yield
    progress.configure(quiet=False)


def test_log_lines_give_count_rate_and_eta(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    out = io.StringIO()
    with Progress("embedding", total=4, stream=out) as bar:
        bar.update()
        bar.update(2)
        bar.callback(4, 4)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("embedding: 1/4 frames (25%)") and "frames/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("embedding: 4/4 frames (100%)") and "done in" in lines[-1]
    assert "\r" not in out.getvalue()  # no bar redraws in a log file


def test_log_is_throttled_but_always_ends_with_a_line():
    out = io.StringIO()
    with Progress("propagating", total=1000, stream=out) as bar:
        for _ in range(1000):
            bar.update()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]
    assert out.getvalue().startswith("propagating: 1000/1000 frames (100%)")


def test_terminal_gets_a_tqdm_bar():
    out = _Terminal()
    with Progress("export", total=3, unit="file", stream=out) as bar:
        bar.update(3)
    text = out.getvalue()
    assert "export" in text and "3/3" in text and "file" in text and "\r" in text


def test_quiet_prints_nothing(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    progress.configure(quiet=True)
    for stream in (io.StringIO(), _Terminal()):
        with Progress("x", total=2, stream=stream) as bar:
            bar.update(2)
        assert stream.getvalue() == ""


def test_stages_give_each_stage_its_own_line(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 1e9)  # only the closing line of each stage
    out = io.StringIO()
    with Stages(units={"training": "iteration"}, stream=out) as stages:
        for t in range(1, 5):
            stages.callback("embedding", t, 4)
        stages.callback("training", 1, 2)
        stages.callback("training", 2, 2)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["embedding: 4/4 frames (100%)",
                                                      "training: 2/2 iterations (100%)"]
    assert stage(None, "x") is None
    seen = []
    stage(lambda *a: seen.append(a), "exporting")(3, 5)
    assert seen == [("exporting", 3, 5)]


def test_slow_work_gives_seconds_per_unit_and_no_repeated_last_line(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    with Progress("evaluating", total=2, unit="sequence", stream=out) as bar:
        now[0] = 30.0
        bar.callback(1, 2)
        now[0] = 60.0
        bar.callback(2, 2)
    lines = out.getvalue().splitlines()
    assert lines == ["evaluating: 1/2 sequences (50%), 30.0 s/sequence, ETA 30 s",
                     "evaluating: 2/2 sequences (100%), 30.0 s/sequence, done in 1 min 00 s"]


def test_a_failed_task_leaves_no_closing_line_so_its_error_stands_alone(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 1e9)
    for stream in (io.StringIO(), _Terminal()):
        with pytest.raises(OSError):
            with Progress("converting", total=200, stream=stream) as bar:
                bar.update(4)
                raise OSError("No space left on device")
        assert "4/200" not in stream.getvalue().rsplit("\r", 1)[-1]
