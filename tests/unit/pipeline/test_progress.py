"""The driver's progress: a line at most every interval when not on a terminal (and one at the end), a tqdm bar
on a terminal; units committed out of those listed so far, frames/s, failures, and an ETA once listing is done."""

from __future__ import annotations

import io
import re
import threading
import time

from batchtrack.pipeline.progress import Counts, Listing, Progress, Tally, eta_seconds, progress_line
from batchtrack.pipeline.unit_summary import UnitSummary


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _unit(frames: int, failed: int = 0, resumed: bool = False) -> UnitSummary:
    return UnitSummary(unit_id=f"u{frames}", videos=2, resumed=resumed, frames=frames, failed=failed)


def test_eta_appears_only_once_listing_has_finished_and_counts_this_runs_pace() -> None:
    counts = Counts()
    for unit in (_unit(0, resumed=True), _unit(100), _unit(100, failed=1)):
        counts.add(unit)
    assert (counts.units, counts.resumed, counts.frames, counts.failed_clips, counts.videos) == (3, 1, 200, 1, 6)
    assert eta_seconds(counts, Listing(units=7, parts_done=1, parts=2), 20.0) is None
    # 2 units tracked in 20 s; 4 left at that pace: 40 s.
    assert eta_seconds(counts, Listing(units=7, parts_done=2, parts=2), 20.0) == 40.0
    line = progress_line(counts, Listing(units=7, parts_done=2, parts=2), 20.0)
    assert line.startswith("progress: 3/7 units committed (1 by an earlier run), 6 videos, 200 frames (10.0 frames/s)")
    assert line.endswith("1 failed clip(s), 0m20s, ETA 0m40s")


def test_a_non_terminal_gets_periodic_lines_and_a_last_one_with_the_final_counts() -> None:
    stream = io.StringIO()
    listing = Listing(units=2, parts_done=1, parts=1)
    progress = Progress(lambda: Tally(listing), interval=0.02, stream=stream)
    progress.add(_unit(30))
    deadline = time.monotonic() + 5
    while "progress: 1/2 units" not in stream.getvalue() and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    progress.add(_unit(40, failed=2))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("progress: ") for line in lines)
    halfway = next(line for line in lines if line.startswith("progress: 1/2 units committed, 2 videos, 30 frames"))
    assert re.search(r", ETA \dm\d\ds$", halfway), halfway  # listing is done: 1 unit left at this pace
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("progress: 2/2 units committed, 4 videos, 70 frames (")
    assert re.search(r"2 failed clip\(s\), \dm\d\ds$", lines[-1]), lines[-1]  # nothing left: no ETA


def test_a_failing_listing_poll_keeps_the_display_going() -> None:
    def broken() -> Tally:
        raise TimeoutError("the tally did not answer")

    stream = io.StringIO()
    with Progress(broken, interval=60, stream=stream) as progress:
        progress.add(_unit(5))
    [line] = stream.getvalue().splitlines()
    assert line.startswith("progress: 1/1+ units committed (listing 0/0 parts), 2 videos, 5 frames")


def test_a_terminal_gets_a_tqdm_bar_and_notes_above_it() -> None:
    stream = _Terminal()
    with Progress(lambda: Tally(Listing(units=3, parts_done=1, parts=1)), interval=60, stream=stream) as progress:
        progress.note("batchtrack: 1-2 tracker actor(s)")
        progress.add(_unit(12))
    text = stream.getvalue()
    assert "batchtrack: 1-2 tracker actor(s)\n" in text
    assert "\r" in text and "1/3" in text and "12 frames" in text
    assert "progress: " not in text


def test_the_tallys_commits_show_before_the_summaries_reach_the_driver() -> None:
    committed = Counts()
    for unit in (_unit(50), _unit(60, failed=1)):
        committed.add(unit)
    stream = io.StringIO()
    with Progress(lambda: Tally(Listing(4, 1, 1), committed), interval=60, stream=stream) as progress:
        progress.add(_unit(50))  # one summary has arrived; the tally knows of two commits
    [line] = stream.getvalue().splitlines()
    assert line.startswith("progress: 2/4 units committed, 4 videos, 110 frames (")
    assert "1 failed clip(s)" in line
