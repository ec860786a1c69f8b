"""Nearest-neighbour search over pointers/: cosine similarity of object pointers, streamed in batches.

Memory is one record batch plus the k best rows so far, whatever the size of the output.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from batchtrack.io.schema import POINTER_DIM

KEY_COLUMNS = ["video_id", "clip_id", "frame_index", "object_id", "track_id"]


def embeddings_array(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list<float16|float32>[256] column as an (N, 256) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(len(column), -1)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _best(table: pa.Table, similarity: np.ndarray, k: int) -> pa.Table:
    order = np.argsort(-similarity, kind="stable")[:k]
    return table.take(pa.array(order)).append_column("similarity", pa.array(similarity[order], pa.float32()))


def nearest_pointers(pointers: ds.Dataset, query: np.ndarray, k: int = 10, batch_size: int = 65536) -> pa.Table:
    """The k rows of `pointers` whose embedding is most cosine-similar to `query`, best first.

    Returns the key columns (video_id, clip_id, frame_index, object_id, track_id) and `similarity`.
    """
    vector = np.asarray(query, dtype=np.float32).reshape(-1)
    if vector.shape != (POINTER_DIM,):
        raise ValueError(f"query must hold {POINTER_DIM} values, got shape {np.shape(query)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    unit = _unit_rows(vector)
    best: pa.Table | None = None
    for batch in pointers.to_batches(columns=[*KEY_COLUMNS, "embedding"], batch_size=batch_size):
        if batch.num_rows == 0:
            continue
        similarity = _unit_rows(embeddings_array(batch.column("embedding"))) @ unit
        candidates = _best(pa.Table.from_batches([batch]).select(KEY_COLUMNS), similarity, k)
        if best is not None:
            candidates = pa.concat_tables([best, candidates])
        best = _best(candidates.drop_columns(["similarity"]), candidates.column("similarity").to_numpy(), k)
    if best is None:
        empty = pointers.schema.empty_table().select(KEY_COLUMNS)
        return empty.append_column("similarity", pa.array([], pa.float32()))
    return best
