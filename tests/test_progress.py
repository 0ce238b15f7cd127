"""avgzsl.progress: tqdm on a terminal, plain whole lines (no carriage returns, no escape codes) elsewhere."""

import io
import re

import pytest

from avgzsl.progress import PlainProgress, progress, progress_mode

CONTROL = re.compile(r"[\r\x1b\x08]")  # carriage return, escape sequences, backspace: what tqdm draws with


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_forced_mode(monkeypatch):
    monkeypatch.delenv("AVGZSL_PROGRESS", raising=False)


def test_not_a_terminal_gives_one_plain_line_per_epoch_with_the_postfix():
    buf = io.StringIO()
    bar = progress(range(1, 4), desc="stage 1", unit="epoch", every=0, file=buf)
    assert isinstance(bar, PlainProgress)
    for epoch in bar:
        bar.set_postfix(HM=f"{10.0 * epoch:.2f}", best=epoch)
    text = buf.getvalue()
    assert not CONTROL.search(text)
    lines = text.splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        assert re.fullmatch(rf"stage 1: {epoch}/3 epochs, \d+\.\d s, HM {10.0 * epoch:.2f}, best {epoch}", line), line


def test_a_fast_loop_prints_only_its_last_line_and_a_transient_one_nothing():
    buf = io.StringIO()
    for _ in progress(range(500), desc="stage 1 epoch 3", unit="batch", every=3600, file=buf):
        pass
    assert re.fullmatch(r"stage 1 epoch 3: 500/500 batches, \d+\.\d s\n", buf.getvalue())
    quiet = io.StringIO()
    for _ in progress(range(500), desc="epoch 3", unit="batch", every=3600, leave=False, file=quiet):
        pass
    assert quiet.getvalue() == ""


def test_a_slow_loop_prints_periodic_lines(monkeypatch):
    import avgzsl.progress as mod

    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(mod, "_clock", lambda: next(clock))
    buf = io.StringIO()
    for _ in progress(range(10), desc="files", unit="file", every=3, leave=False, file=buf):
        pass
    lines = buf.getvalue().splitlines()
    # one line per 3 (fake) seconds, and the last one since interim lines were printed
    assert 2 <= len(lines) <= 5 and lines[-1].startswith("files: 10/10 files")
    assert not CONTROL.search(buf.getvalue())


def test_update_driven_and_resumed_counts():
    buf = io.StringIO()
    bar = progress(total=3, desc="synth UCF/main", unit="class", every=0, file=buf)
    for _ in range(3):
        bar.update(1)
    bar.close()
    bar.close()  # twice: still one last line
    assert [line.split(",")[0] for line in buf.getvalue().splitlines()] == [
        "synth UCF/main: 1/3 classes", "synth UCF/main: 2/3 classes", "synth UCF/main: 3/3 classes"]
    resumed = io.StringIO()
    for _ in progress(range(3, 6), desc="stage 1", unit="epoch", every=0, initial=2, total=5, file=resumed):
        pass
    assert [line.split(",")[0] for line in resumed.getvalue().splitlines()] == [
        "stage 1: 3/5 epochs", "stage 1: 4/5 epochs", "stage 1: 5/5 epochs"]


def test_a_terminal_gets_tqdm_and_disabled_shows_nothing(monkeypatch):
    from tqdm import tqdm

    term = FakeTerminal()
    bar = progress(range(3), desc="stage 1", file=term)
    assert isinstance(bar, tqdm) and not bar.disable
    list(bar)
    assert "\r" in term.getvalue()  # a real bar (what must not reach a log file)
    for file in (io.StringIO(), FakeTerminal()):
        off = progress(range(3), desc="stage 1", enabled=False, every=0, file=file)
        list(off)
        off.close()
        assert file.getvalue() == ""
    monkeypatch.setenv("AVGZSL_PROGRESS", "plain")
    assert progress_mode(FakeTerminal()) == "plain"
    monkeypatch.setenv("AVGZSL_PROGRESS", "off")
    assert progress_mode(io.StringIO()) == "off"


def test_synth_and_loading_write_plain_lines_into_a_log(tmp_path, capsys):
    """The data layer's progress goes through avgzsl.progress: under pytest stderr is not a terminal."""
    from avgzsl.config import DataConfig
    from avgzsl.data.loading import load_benchmark
    from avgzsl.data.synth import generate_benchmark

    root = generate_benchmark(tmp_path, dataset="Synthetic", scale=0.05, temporal=False, progress=True)
    load_benchmark(DataConfig(dataset="Synthetic", root=str(root), temporal=False), progress=True)
    err = capsys.readouterr().err
    assert not CONTROL.search(err)
    assert re.search(r"^synth Synthetic/main: (\d+)/\1 classes, \d+\.\d s$", err, re.MULTILINE), err
