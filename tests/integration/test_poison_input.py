"""An input that kills its actor process every time (a decoder crash) ends as one failed row after a bounded
number of attempts, while the other videos of its unit and of the job are tracked and committed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchtrack.pipeline.unit_processor import CRASH_ENV

from .conftest import assert_complete_dataset, make_corpus, read_table

pytestmark = pytest.mark.integration


def test_a_video_that_kills_its_actor_every_time_becomes_a_failed_row(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", num_videos=3, num_frames=12, seed=21, broken=False)
    shutil.move(corpus.videos[1], corpus.folder / "video_1_poison.mp4")  # still prompted under its old name
    prompts = corpus.prompts.read_text().replace('"video_1.mp4"', '"video_1_poison.mp4"')
    corpus.prompts.write_text(prompts)
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "BATCHTRACK_"))}
    env[CRASH_ENV] = "_poison"
    result = subprocess.run(
        [sys.executable, "-m", "batchtrack.cli", "run", str(corpus.folder), str(output),
         "--prompts", str(corpus.prompts), "--model", "test-tiny", "--clip-frames", "8", "--actors", "1"],
        env=env, capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]  # a failed clip: exit 1
    clips = read_table(output, "clips").to_pylist()
    assert len({c["unit_id"] for c in clips}) == 1, "the three videos share one unit"
    failed = [c for c in clips if c["status"] == "failed"]
    assert [Path(c["video_uri"]).name for c in failed] == ["video_1_poison.mp4"]
    assert failed[0]["error_class"] == "ActorDied" and "died 2 times" in failed[0]["error_message"]
    assert sorted(Path(c["video_uri"]).name for c in clips if c["status"] == "ok") == ["video_0.mp4"] * 2 + [
        "video_2.mp4"
    ] * 2
    assert not list((output / "_attempts").glob("*.json")), "the attempts record is cleared by the commit"
    assert (output / "_failed").is_dir() and len(list((output / "_failed").iterdir())) == 1
    assert_complete_dataset(output, corpus.prompts, lambda name: str(corpus.folder / name))
