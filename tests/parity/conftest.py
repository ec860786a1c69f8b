"""Every parity module runs at the same torch thread count: float32 sums come out in a different order with another
count (SAM 3's mask-prompt pointers differ from the official ones by 2.2e-5 at 1 thread, 1e-5 is asserted), and
a test that ran earlier in the same process (an in-process actor sets its own count) must not choose it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

PARITY_THREADS = max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="module")
def _parity_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(PARITY_THREADS)
    yield
    torch.set_num_threads(previous)
