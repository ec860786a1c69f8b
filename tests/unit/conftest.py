"""Unit tests run single-threaded in torch: on a 2-core machine shared with Ray workers, intra-op threads
spin against each other and make small-tensor tests many times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
