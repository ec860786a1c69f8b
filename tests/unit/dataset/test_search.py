"""Nearest neighbours over pointers/: the reader's streamed cosine search, and the README's DuckDB query."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from batchtrack.dataset import open_dataset
from batchtrack.dataset.search import embeddings_array

from .conftest import FakeOutput

DUCKDB_NEAREST = """
SELECT video_id, frame_index, track_id,
       array_cosine_similarity(embedding::FLOAT[256], $query::FLOAT[256]) AS similarity
FROM read_parquet($files) ORDER BY similarity DESC LIMIT 5
"""


def test_nearest_finds_the_track_of_the_query(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    for track, direction in fake_output.truth.directions.items():
        if track == 99:  # the uncommitted unit's track is not in the dataset
            continue
        best = data.nearest(direction, k=5)
        assert best.num_rows == 5
        assert set(best.column("track_id").to_pylist()) == {track}
        similarity = best.column("similarity").to_numpy()
        assert np.all(np.diff(similarity) <= 0) and similarity[0] > 0.9


def test_nearest_streams_batches_to_the_same_answer(fake_output: FakeOutput) -> None:
    from batchtrack.dataset.search import nearest_pointers

    pointers = open_dataset(fake_output.path).pointers
    query = fake_output.truth.directions[2]
    whole = nearest_pointers(pointers, query, k=7)
    streamed = nearest_pointers(pointers, query, k=7, batch_size=3)
    keys = ["video_id", "frame_index", "track_id"]
    assert whole.select(keys).to_pylist() == streamed.select(keys).to_pylist()
    np.testing.assert_allclose(whole.column("similarity"), streamed.column("similarity"), rtol=1e-5)


def test_nearest_rejects_a_wrong_query(fake_output: FakeOutput) -> None:
    with pytest.raises(ValueError, match="256"):
        open_dataset(fake_output.path).nearest(np.zeros(10))


def test_duckdb_query_agrees_with_the_reader(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    table = data.pointers.to_table()
    query = embeddings_array(table.column("embedding"))[3]
    rows = duckdb.sql(DUCKDB_NEAREST, params={"query": query.tolist(), "files": data.paths("pointers")}).fetchall()
    assert len(rows) == 5 and rows[0][3] == pytest.approx(1.0, abs=1e-5)
    ours = data.nearest(query, k=5)
    assert [(r[0], r[1], r[2]) for r in rows] == list(zip(ours.column("video_id").to_pylist(),
                                                          ours.column("frame_index").to_pylist(),
                                                          ours.column("track_id").to_pylist(), strict=True))
