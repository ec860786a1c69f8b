"""What the driver shows while a job runs: units committed out of those listed so far, videos, frames, frames/s,
failed clips, and an ETA once listing has finished.

On a terminal it is a tqdm bar; otherwise (`ray job logs`, a CI log, a pipe) a line at most every
`interval` seconds, and one when the job ends, so a long job is never silent until its summary.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from batchtrack.pipeline.unit_summary import UnitSummary


@dataclass(frozen=True)
class Listing:
    """How far listing has got: units planned so far, and listing parts finished out of all."""

    units: int = 0
    parts_done: int = 0
    parts: int = 0

    @property
    def finished(self) -> bool:
        return self.parts > 0 and self.parts_done >= self.parts


@dataclass
class Counts:
    """What committed units report, summed (units an earlier run committed count as units, not as work)."""

    units: int = 0
    resumed: int = 0
    videos: int = 0
    frames: int = 0
    failed_clips: int = 0

    def add(self, unit: UnitSummary) -> None:
        self.units += 1
        self.videos += unit.videos
        if unit.resumed:
            self.resumed += 1
        else:
            self.frames += unit.frames
            self.failed_clips += unit.failed


@dataclass(frozen=True)
class Tally:
    """What the job's tally knows while it runs: how far listing has got and what the actors have committed.

    The actors report each unit when they commit it, ahead of the unit's summary reaching the driver through
    Ray Data's output stream (which lagged commits by 30-45 s on a busy 2-core node).
    """

    listing: Listing = Listing()
    committed: Counts | None = None


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def eta_seconds(counts: Counts, listing: Listing, elapsed: float) -> float | None:
    """Seconds left at this run's pace of units, once listing has finished (before, the total is unknown) and
    while units are left."""
    tracked = counts.units - counts.resumed
    left = listing.units - counts.units
    if not listing.finished or tracked <= 0 or elapsed <= 0 or left <= 0:
        return None
    return left * elapsed / tracked


def progress_line(counts: Counts, listing: Listing, elapsed: float) -> str:
    """One line of progress.

    >>> progress_line(Counts(units=3, videos=5, frames=400, failed_clips=1), Listing(10, 2, 2), 40.0)
    'progress: 3/10 units committed, 5 videos, 400 frames (10.0 frames/s), 1 failed clip(s), 0m40s, ETA 1m33s'
    >>> progress_line(Counts(), Listing(4, 0, 2), 5.0)
    'progress: 0/4+ units committed (listing 0/2 parts), 0 videos, 0 frames (0.0 frames/s), 0 failed clip(s), 0m05s'
    """
    units = max(listing.units, counts.units)  # the tally may answer late; committed units were listed
    listed = f"{units}" if listing.finished else f"{units}+"
    listing_note = "" if listing.finished else f" (listing {listing.parts_done}/{listing.parts} parts)"
    rate = counts.frames / elapsed if elapsed > 0 else 0.0
    resumed = f" ({counts.resumed} by an earlier run)" if counts.resumed else ""
    line = (
        f"progress: {counts.units}/{listed} units committed{resumed}{listing_note}, {counts.videos} videos, "
        f"{counts.frames} frames ({rate:.1f} frames/s), {counts.failed_clips} failed clip(s), {_clock(elapsed)}"
    )
    eta = eta_seconds(counts, listing, elapsed)
    return line if eta is None else f"{line}, ETA {_clock(eta)}"


class Progress:
    """The driver's progress display; `add` each unit as its summary arrives, `close` at the end (or use `with`).

    `poll` is asked for the job's `Tally` (how far listing has got, what the actors committed); the display
    shows whichever of the tally's and the summaries' counts is further along. `stream` a terminal gets a tqdm
    bar, anything else a line every `interval` seconds from a background thread.
    """

    def __init__(
        self,
        poll: Callable[[], Tally],
        interval: float = 10.0,
        stream: IO[str] | None = None,
        bar: bool | None = None,
    ) -> None:
        self._poll = poll
        self._interval = interval
        self._stream = stream if stream is not None else sys.stderr
        self._counts = Counts()  # from the units' summaries
        self._committed = Counts()  # from the tally
        self._listing = Listing()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stop = threading.Event()
        use_bar = bar if bar is not None else _is_terminal(self._stream)
        self._bar = _make_bar(self._stream) if use_bar else None
        self._thread = threading.Thread(target=self._run, name="batchtrack-progress", daemon=True)
        self._thread.start()

    def add(self, unit: UnitSummary) -> None:
        with self._lock:
            self._counts.add(unit)
        if self._bar is not None:
            self._refresh_bar()

    def _current(self) -> Counts:
        return self._committed if self._committed.units > self._counts.units else self._counts

    def line(self) -> str:
        with self._lock:
            return progress_line(self._current(), self._listing, time.monotonic() - self._started)

    def _poll_listing(self) -> None:
        try:
            tally = self._poll()
        except Exception:  # progress is advisory: a failed poll keeps the last numbers
            return
        with self._lock:
            self._listing = tally.listing
            if tally.committed is not None:
                self._committed = tally.committed

    def _run(self) -> None:
        wait = min(self._interval, 1.0) if self._bar is not None else self._interval
        while not self._stop.wait(wait):
            self._poll_listing()
            if self._bar is not None:
                self._refresh_bar()
            else:
                self._write(self.line())

    def _refresh_bar(self) -> None:
        bar = self._bar
        assert bar is not None
        with self._lock:
            counts, listing = self._current(), self._listing
            elapsed = time.monotonic() - self._started
            bar.total = max(listing.units, counts.units) if listing.finished else None
            bar.n = counts.units
            rate = counts.frames / elapsed if elapsed > 0 else 0.0
            bar.set_postfix_str(
                f"listed {listing.units}{'' if listing.finished else '+'}, {counts.videos} videos, "
                f"{counts.frames} frames, {rate:.1f} frames/s, {counts.failed_clips} failed",
                refresh=False,
            )
        bar.refresh()

    def note(self, text: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            self._write(text)

    def _write(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def close(self) -> None:
        """Stop the display and leave a last line (or a full bar) with the final numbers."""
        self._stop.set()
        self._thread.join()
        self._poll_listing()
        if self._bar is not None:
            self._refresh_bar()
            self._bar.close()
        else:
            self._write(self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _make_bar(stream: IO[str]) -> Any:
    from tqdm import tqdm

    return tqdm(total=None, unit="unit", desc="batchtrack", file=stream, dynamic_ncols=True, leave=True)
