"""The reader, exports, HF datasets and the README's "Reading the output" on a real demo job's output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchtrack.dataset import open_dataset
from batchtrack.dataset.exports import export_dataset
from batchtrack.errors import OutputNotFoundError

from .dataset_checks import (
    assert_davis_round_trip,
    assert_nearest_finds_itself,
    assert_reader_matches_rows,
    assert_sav_round_trip,
    assert_ytvis_round_trip,
    demo_job,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

README = Path(__file__).resolve().parents[2] / "README.md"

@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    demo_job(root / "corpus", str(root / "out"))
    return root / "out"


def test_reader_on_the_demo_output(demo_output: Path) -> None:
    data = open_dataset(str(demo_output))
    assert len(data.videos()) == 2 and all(v.num_frames == 60 and v.clips_ok == 2 for v in data.videos())
    assert_reader_matches_rows(data)
    assert_nearest_finds_itself(data)


def test_torch_frames_on_the_demo_output(demo_output: Path) -> None:
    samples = list(open_dataset(str(demo_output)).to_torch())
    assert len(samples) == 120
    assert all(s.masks.shape[0] == len(s.track_ids) and s.masks.flatten(1).any(1).all() for s in samples)
    assert sum(len(s.track_ids) for s in samples) > 120


def test_exports_round_trip(demo_output: Path, tmp_path: Path) -> None:
    data = open_dataset(str(demo_output))
    for fmt in ("sav", "ytvis", "davis"):
        summary = export_dataset(data, str(tmp_path / fmt), fmt, frames=fmt == "davis")
        assert (summary.videos, summary.skipped) == (2, 0)
    assert_sav_round_trip(data, tmp_path / "sav")
    assert_ytvis_round_trip(data, tmp_path / "ytvis" / "instances.json")
    assert_davis_round_trip(data, tmp_path / "davis")
    assert len(list((tmp_path / "davis" / "JPEGImages").rglob("*.jpg"))) == 120


def test_an_uncommitted_unit_is_not_read(demo_output: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(demo_output, output)
    before = open_dataset(str(output)).masks.count_rows()
    (unit,) = [p.stem for p in (output / "clips").glob("*.parquet")]
    shutil.copy(output / "masks" / f"{unit}.parquet", output / "masks" / "being-written.parquet")
    assert open_dataset(str(output)).masks.count_rows() == before > 0
    (output / "clips" / f"{unit}.parquet").unlink()  # the only unit loses its commit
    with pytest.raises(OutputNotFoundError):
        open_dataset(str(output))


def _readme_blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text[text.index("## Reading the output") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_reading_the_output_runs_as_written(demo_output: Path, tmp_path: Path) -> None:
    """The section's Python blocks and commands, run in a folder where `out` is the demo output."""
    (tmp_path / "out").symlink_to(demo_output)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    python = _readme_blocks("python")
    commands = _readme_blocks("bash")
    assert len(python) == 4 and len(commands) == 1
    script = "\n".join(python) + "\nprint('tracks', len(data.tracks(video_id)), 'masks', len(masks))\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "similarity" in result.stdout and re.search(r"tracks [1-9]\d* masks [1-9]", result.stdout)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", commands[0]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "exports" / "sav").glob("*_auto.json"))) == 2
    assert (tmp_path / "exports" / "ytvis" / "instances.json").is_file()
    assert len(list((tmp_path / "exports" / "davis" / "JPEGImages").rglob("*.jpg"))) == 120
