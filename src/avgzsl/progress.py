"""Progress display, in one place: tqdm bars on a terminal, plain periodic lines anywhere else.

    for epoch in progress(range(1, epochs + 1), desc="stage 1", unit="epoch", every=0, enabled=cfg.train.progress):
        ...
        bar.set_postfix(HM=f"{hm:.2f}")

What this module owns: deciding how progress is shown. A tqdm bar redraws itself with carriage returns
and terminal escape codes; written into a log file (`avgzsl run ... 2> log.txt`, a batch scheduler, a
CI job) that is one unreadable line per redraw. So when the stream is not a terminal, `progress`
returns a `PlainProgress` instead: the same small interface (iterate, `update`, `set_postfix`,
`write`, `close`), which prints whole lines such as

    stage 1: 3/15 epochs, 36.9 s, HM 25.10, ZSL 20.00, best 3

at most one every `every` seconds (0: one per finished item, e.g. per epoch) and a last one when it
is closed. `enabled=False` (train.progress=false, --quiet) shows nothing either way.
`AVGZSL_PROGRESS=bar|plain|off` overrides the terminal test (e.g. plain lines on a terminal).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

DEFAULT_EVERY = 30.0  # seconds between plain lines of a long loop (per-item lines: every=0)
ENV = "AVGZSL_PROGRESS"
_clock = time.perf_counter  # module attribute, so that tests can run the clock

__all__ = ["DEFAULT_EVERY", "PlainProgress", "progress", "progress_mode"]


def progress_mode(file: TextIO | None = None, enabled: bool = True) -> str:
    """'off', 'bar' (file is a terminal) or 'plain' (anything else); AVGZSL_PROGRESS overrides the test."""
    if not enabled:
        return "off"
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("bar", "plain", "off"):
        return forced
    stream = sys.stderr if file is None else file
    if type(stream).__module__.startswith("ipykernel"):  # a notebook draws tqdm.auto's widgets, not escape codes
        return "bar"
    try:
        return "bar" if stream.isatty() else "plain"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "plain"


def _plural(unit: str, n: float) -> str:
    if n == 1 or not unit:
        return unit
    return unit + ("es" if unit.endswith(("s", "sh", "tch", "x")) else "s")  # batches, classes; epochs


class PlainProgress:
    """tqdm's interface as whole lines without carriage returns or escape codes (see the module docstring)."""

    def __init__(self, iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", every: float = DEFAULT_EVERY, leave: bool = True, initial: int = 0,
                 file: TextIO | None = None) -> None:
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None:
            try:
                total = len(iterable) + int(initial)  # type: ignore[arg-type]  # tqdm: total counts `initial`
            except TypeError:
                total = None
        self.total = None if total is None else int(total)
        self.unit = unit
        self.every = float(every)
        self.leave = leave
        self.n = int(initial)
        self.file = file
        self.postfix: dict[str, Any] = {}
        self._start = _clock()
        self._last_line = self._start
        self._closed = False
        self._printed_n: int | None = None

    # --- the lines ----------------------------------------------------------------------------------
    def line(self) -> str:
        """The current state as one line, e.g. 'stage 1: 3/15 epochs, 36.9 s, HM 25.10'."""
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{count} {_plural(self.unit, self.total if self.total is not None else self.n)}",
                 f"{_clock() - self._start:.1f} s"]
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _emit(self) -> None:
        stream = sys.stderr if self.file is None else self.file
        print(self.line(), file=stream, flush=True)
        self._last_line = _clock()
        self._printed_n = self.n

    def _maybe_emit(self) -> None:
        if self.every <= 0 or _clock() - self._last_line >= self.every:
            self._emit()

    # --- tqdm's interface ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("PlainProgress without an iterable: use update()")
        try:
            for item in self.iterable:
                yield item
                self.n += 1  # the item's work is done when the loop asks for the next one
                if self.total is None or self.n < self.total:
                    self._maybe_emit()
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if self.total is None or self.n < self.total:
            self._maybe_emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = dict(ordered_dict or {}, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def write(self, text: str) -> None:
        stream = sys.stderr if self.file is None else self.file
        print(text, file=stream, flush=True)

    def close(self) -> None:
        """The last line (with leave=True, or when interim lines were printed), once."""
        if self._closed:
            return
        self._closed = True
        if (self.leave or self._printed_n is not None) and self._printed_n != self.n:
            self._emit()

    def refresh(self) -> None:  # tqdm compatibility: nothing to redraw
        pass


def progress(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
             enabled: bool = True, every: float = DEFAULT_EVERY, leave: bool = True, initial: int = 0,
             file: TextIO | None = None, **tqdm_kwargs: Any):
    """A progress display over `iterable` (or one driven by `update`), as suits the stream it writes to.

    Args:
        desc, total, unit, leave, initial: as tqdm's.
        enabled: False shows nothing (train.progress=false, --quiet).
        every: plain mode: at most one line per `every` seconds; 0 = one line per finished item (an epoch).
            A last line is printed on close when `leave` (tqdm's leave=False bars stay silent unless they
            already printed).
        file: the stream (default: sys.stderr at the time of the call).
        tqdm_kwargs: passed to tqdm on a terminal (e.g. mininterval), ignored otherwise.

    Returns a tqdm bar on a terminal, a `PlainProgress` elsewhere, a disabled tqdm when not `enabled`.
    """
    mode = progress_mode(file, enabled)
    if mode == "plain":
        return PlainProgress(iterable, desc=desc, total=total, unit=unit, every=every, leave=leave, initial=initial,
                             file=file)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, initial=initial,
                file=sys.stderr if file is None else file, disable=mode == "off", **tqdm_kwargs)
