"""The unit-test guards really refuse a cluster and the network (see tests/unit/conftest.py)."""

from __future__ import annotations

import socket

import pytest
import ray


def test_ray_init_is_refused_in_unit_tests() -> None:
    with pytest.raises(RuntimeError, match="must not start Ray"):
        ray.init(num_cpus=1)


def test_network_connections_are_refused_in_unit_tests() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(RuntimeError, match="network"):
        sock.connect(("127.0.0.1", 9))
