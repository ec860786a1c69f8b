"""Hugging Face datasets reads masks/ and pointers/ as they are (offline, in a private cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from batchtrack.dataset import open_dataset

from .conftest import FakeOutput


@pytest.fixture
def offline_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    for name, value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache),
                        "HF_DATASETS_CACHE": str(cache / "datasets")}.items():
        monkeypatch.setenv(name, value)
    return cache


def test_load_dataset_reads_masks_and_pointers(fake_output: FakeOutput, offline_hf: Path) -> None:
    from datasets import load_dataset

    data = open_dataset(fake_output.path)
    masks = load_dataset("parquet", data_files=data.paths("masks"), split="train", cache_dir=str(offline_hf))
    pointers = load_dataset("parquet", data_files=data.paths("pointers"), split="train", cache_dir=str(offline_hf))
    assert masks.num_rows == pointers.num_rows == len(fake_output.truth.masks) > 0
    assert set(masks.column_names) >= {"video_id", "frame_index", "track_id", "rle", "height", "width"}
    row = masks[0]
    mask = coco_mask.decode({"size": [row["height"], row["width"]], "counts": row["rle"].encode()})
    want = fake_output.truth.masks[(row["video_id"], row["frame_index"], row["track_id"])]
    assert want.any()
    np.testing.assert_array_equal(mask.astype(bool), want)
    embeddings = np.asarray(pointers.with_format("numpy")["embedding"])
    assert embeddings.shape == (pointers.num_rows, 256) and np.abs(embeddings).sum() > 0
