"""SAM 3 visual prompts through the batch job on the embedded local Ray: the run's shape and outputs, not quality.

`sam3-test-tiny` is SAM 3's code path (PE ViT trunk, dual neck, SAM 3's tracker switches) at 112 px. It runs once
with requested random weights and once from a checkpoint in Meta's sam3.pt layout (`{"model": ...}` with Meta's key
names and a detector key the job must leave unread) holding those same weights, so the second run must write the
very same rows: the job reaches SAM 3's strict loader by part and nothing else differs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch

from batchtrack.cli import main
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import our_key_to_sam3
from batchtrack.synthetic import make_demo_corpus

from .conftest import assert_complete_dataset, read_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

MODEL = "sam3-test-tiny"
CLIP_FRAMES = 10  # 2 clips per 16-frame video: objects are handed over from one clip's bank to the next
NUM_FRAMES = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sam3") / "corpus"
    make_demo_corpus(folder, num_videos=2, num_frames=NUM_FRAMES)
    return folder


def _run(corpus: Path, output: Path, *weights: str) -> None:
    argv = ["run", str(corpus), str(output), "--prompts", str(corpus / "prompts.jsonl"), "--model", MODEL]
    assert main([*argv, "--clip-frames", str(CLIP_FRAMES), *weights]) == 0


@pytest.fixture(scope="module")
def random_output(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("sam3-random") / "out"
    _run(corpus, output, "--random-weights")
    return output


def _meta_checkpoint(path: Path) -> Path:
    """The job's random weights saved as Meta saves sam3.pt, with a detector key the job must not read."""
    tracker = build_tracker(MODEL, device="cpu", random_weights=True)
    state = {our_key_to_sam3(k): v.clone() for k, v in tracker.state_dict().items()}
    state["detector.transformer.decoder.presence_token.weight"] = torch.zeros(1, 256)
    torch.save({"model": state}, path)
    return path


def test_sam3_visual_prompts_give_every_prompted_object_a_row_on_every_frame(
    corpus: Path, random_output: Path
) -> None:
    masks = assert_complete_dataset(random_output, corpus / "prompts.jsonl", lambda name: str(corpus / name))
    clips = read_table(random_output, "clips").to_pylist()
    assert len(clips) == 4 and {c["status"] for c in clips} == {"ok"}, clips
    assert {c["model_name"] for c in clips} == {MODEL}
    assert sum(c["mask_rows"] for c in clips) == masks.num_rows > 0
    pointers = read_table(random_output, "pointers")
    assert pointers.schema.field("embedding").type.list_size == 256
    embeddings = pointers.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 256)
    assert embeddings.shape[0] == masks.num_rows and (embeddings != 0).any(axis=1).all()
    assert pc.min(masks.column("height")).as_py() == 240 and pc.min(masks.column("width")).as_py() == 320


def test_a_meta_layout_sam3_checkpoint_writes_the_same_rows_as_its_weights(
    corpus: Path, random_output: Path, tmp_path: Path
) -> None:
    checkpoint = _meta_checkpoint(tmp_path / "sam3.pt")
    output = tmp_path / "out"
    _run(corpus, output, "--checkpoint", str(checkpoint))
    keys = ["video_id", "frame_index", "object_id"]
    for kind, column in (("masks", "rle"), ("pointers", "embedding")):
        ours = read_table(output, kind).sort_by([(k, "ascending") for k in keys])
        want = read_table(random_output, kind).sort_by([(k, "ascending") for k in keys])
        assert ours.num_rows == want.num_rows > 0
        assert ours.column(column).to_pylist() == want.column(column).to_pylist(), kind
    hashes = {c["checkpoint_hash"] for c in read_table(output, "clips").to_pylist()}
    assert len(hashes) == 1 and not hashes.pop().startswith("random-")
