"""Concept prompts (`--text`) through the batch job on the embedded local Ray: the run's shape, not quality.

`sam3-test-tiny` with its detector, from a checkpoint in Meta's sam3.pt layout made here (tracker, text encoder
and detector keys). Random weights detect nothing, so concept tracks are not expected; the videos' box prompts
ride along in concept mode and give rows whose concept is null. What is checked: every clip ok, the concept
column in masks/ and pointers/, one row per (video, frame, object), a rerun resumes everything, and other
concepts make other clip ids (a rerun with them tracks again instead of resuming). Quality with a ground-truth
detector is checked in tests/unit/model/test_concept.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from batchtrack.cli import main
from batchtrack.model.loading.build import RANDOM_WEIGHTS_SEED, build_tracker
from batchtrack.model.loading.checkpoint import SAM3_PARTS, our_key_to_sam3
from batchtrack.synthetic import make_demo_corpus

from .conftest import read_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

MODEL = "sam3-test-tiny"
NUM_FRAMES = 8
CLIP_FRAMES = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("concept") / "corpus"
    make_demo_corpus(folder, num_videos=2, num_frames=NUM_FRAMES, width=96, height=64)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sam3-test-tiny whole (tracker, text encoder, detector), saved as Meta saves sam3.pt."""
    torch.manual_seed(0)
    model = build_tracker(MODEL, device="cpu", parts=SAM3_PARTS)
    state = {our_key_to_sam3(k): v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "sam3.pt"
    torch.save({"model": state}, path)
    return path


def _run(corpus: Path, output: Path, checkpoint: Path, *texts: str) -> int:
    argv = ["run", str(corpus), str(output), "--prompts", str(corpus / "prompts.jsonl"), "--model", MODEL]
    argv += ["--checkpoint", str(checkpoint), "--clip-frames", str(CLIP_FRAMES)]
    for text in texts:
        argv += ["--text", text]
    return main(argv)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("video_id", "ascending"), ("frame_index", "ascending"), ("object_id", "ascending")])


def test_concept_job_writes_the_concept_column_resumes_and_keys_clips_by_concepts(
    corpus: Path, checkpoint: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    assert _run(corpus, output, checkpoint, "shape") == 0
    clips = read_table(output, "clips").to_pylist()
    assert len(clips) == 2 * (NUM_FRAMES // CLIP_FRAMES) and {c["status"] for c in clips} == {"ok"}, clips
    masks, pointers = _sorted(read_table(output, "masks")), _sorted(read_table(output, "pointers"))
    assert masks.schema.field("concept").type == pa.string()
    assert masks.num_rows == pointers.num_rows == sum(c["mask_rows"] for c in clips) > 0
    assert masks.column("concept").to_pylist() == pointers.column("concept").to_pylist()
    keys = list(zip(*(masks.column(k).to_pylist() for k in ("video_id", "frame_index", "object_id")), strict=True))
    assert len(set(keys)) == len(keys), "one row per (video, frame, object)"
    prompted = {json.loads(line)["object_id"] for line in (corpus / "prompts.jsonl").read_text().splitlines()}
    for row in masks.select(["object_id", "concept"]).to_pylist():
        # Box prompts keep concept null; a concept track (none with random weights) would say "shape".
        assert row["concept"] is None if row["object_id"] in prompted else row["concept"] == "shape"

    # A rerun resumes every unit: nothing is written twice.
    assert _run(corpus, output, checkpoint, "shape") == 0
    assert read_table(output, "clips").num_rows == len(clips)
    assert read_table(output, "masks").num_rows == masks.num_rows

    # Other concepts are other clips: the run tracks again, and the first run's rows stay as they are.
    assert _run(corpus, output, checkpoint, "shape", "circle") == 0
    again = read_table(output, "clips").to_pylist()
    first_ids = {c["clip_id"] for c in clips}
    new_ids = {c["clip_id"] for c in again} - first_ids
    assert len(again) == 2 * len(clips) and len(new_ids) == len(clips)
    assert {c["status"] for c in again} == {"ok"}


def test_concept_job_runs_on_random_weights_of_a_model_with_a_detector(corpus: Path, tmp_path: Path) -> None:
    """`batchtrack run CORPUS OUT --model sam3-test-tiny --random-weights --text shape`: random weights build the
    detector too (no checkpoint needed), every clip is ok and the rows carry the concept column."""
    output = tmp_path / "out"
    argv = ["run", str(corpus), str(output), "--prompts", str(corpus / "prompts.jsonl"), "--model", MODEL]
    argv += ["--random-weights", "--clip-frames", str(CLIP_FRAMES), "--text", "shape"]
    assert main(argv) == 0
    clips = read_table(output, "clips").to_pylist()
    assert len(clips) == 2 * (NUM_FRAMES // CLIP_FRAMES) and {c["status"] for c in clips} == {"ok"}, clips
    assert {c["checkpoint_hash"] for c in clips} == {f"random-{RANDOM_WEIGHTS_SEED}"}
    masks = read_table(output, "masks")
    assert masks.schema.field("concept").type == pa.string()
    assert masks.num_rows == sum(c["mask_rows"] for c in clips) > 0, "the box prompts' objects are tracked"


def test_the_readme_sam3_block_runs_as_written_with_the_tiny_model_in_place_of_sam3_pt(
    checkpoint: Path, tmp_path: Path
) -> None:
    """README "### SAM 3": its commands, with `--model sam3 --checkpoint sam3.pt` swapped for the tiny model's file.

    The image-size override (336 px against the file's 112) also takes the RoPE tables' rebuild path.
    """
    from .test_readme_commands import readme_blocks

    commands = [c for b in readme_blocks() if b.heading == "### SAM 3" for c in b.commands]
    assert len(commands) == 2 and all("/tmp/sam3/" in c for c in commands), commands
    assert "--model sam3 --checkpoint sam3.pt" in commands[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        command = command.replace("/tmp/sam3/", f"{tmp_path}/").replace(
            "--model sam3 --checkpoint sam3.pt", f"--model {MODEL} --checkpoint {checkpoint}"
        )
        result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    clips = read_table(tmp_path / "out", "clips").to_pylist()
    assert len(clips) == 2 and {c["status"] for c in clips} == {"ok"}, clips
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert "336" in json.dumps(manifest) and "person" in json.dumps(manifest)
