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


class UnitTestGuardError(RuntimeError):
    """A unit test reached for a cluster or the network; that belongs in tests/integration."""


@pytest.fixture(autouse=True)
def _no_cluster_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse_connect(self: socket.socket, address: object) -> None:
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise UnitTestGuardError(f"unit tests must not open network connections (tried {address!r})")

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return

    def refuse_init(*args: object, **kwargs: object) -> None:
        raise UnitTestGuardError("unit tests must not start Ray; use tests/integration")

    monkeypatch.setattr(ray, "init", refuse_init)
