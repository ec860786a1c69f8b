"""The official SAM 3 (PyPI `sam3==0.1.4`) as a CPU test oracle: import shims and CPU patches, test-only.

Nothing here is used by batchtrack itself. sam3.md lists why each piece is needed:
- torchvision: the only build on the package index is a CUDA one whose `_C` extension does not load with the
  CPU torch. The tracker path never calls torchvision; the detector/image-processor modules import it at module
  level. A stub package satisfies those imports; calling anything in it raises.
- triton: `sam3/model/edt.py` imports it at module level (only training uses the kernel).
- `device="cuda"` allocations and `.cuda()` / `.pin_memory()` calls, and explicit `.to(torch.bfloat16)` casts of
  stored memories (on GPU the official code runs under a persistent bf16 autocast; on CPU it is fp32, so the
  casts are replaced by a bf16 round trip that keeps the rounding but returns fp32).

`oracle_modules()` installs the shims with a MonkeyPatch for the duration of the imports only, so the rest of
the test session (sam2's parity tests included) sees no fake torchvision.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch


class _UnavailableMeta(type):
    """Any attribute of a stub class is another stub class (enum members, nested helpers)."""

    def __getattr__(cls, item: str) -> type:
        if item.startswith("__"):
            raise AttributeError(item)
        return _unavailable(f"{cls.__qualname__}.{item}")

    def __getitem__(cls, item: object) -> type:
        return cls


def _unavailable(name: str) -> type:
    """A stand-in class for any torchvision/triton object: importable, subclassable, annotatable, never usable."""

    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{name} is a test-only stub (no CPU torchvision/triton in this venv)")

    return _UnavailableMeta(name.rsplit(".", 1)[-1], (), {"__init__": __init__, "__qualname__": name})


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so `import name.sub` resolves through sys.modules

    def __getattr__(item: str) -> object:
        if item.startswith("__"):
            raise AttributeError(item)
        return _unavailable(f"{name}.{item}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


_STUBBED = ("torchvision", "triton")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `torchvision` / `triton` and every submodule of them to a stub module."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in _STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _stub_module(spec.name)
        if spec.name == "triton":
            module.jit = _identity_decorator  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _identity_decorator(*args: Any, **kwargs: Any) -> Any:
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


@contextmanager
def _shimmed_imports() -> Iterator[None]:
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "meta_path", [_StubFinder(), *sys.meta_path])
        try:
            yield
        finally:
            for name in set(sys.modules) - before:
                if name.split(".")[0] in _STUBBED:
                    del sys.modules[name]


def oracle_modules() -> types.SimpleNamespace:
    """The oracle's modules the parity tests use, imported under the shims."""
    with _shimmed_imports():
        ns = types.SimpleNamespace(
            builder=importlib.import_module("sam3.model_builder"),
            vitdet=importlib.import_module("sam3.model.vitdet"),
            necks=importlib.import_module("sam3.model.necks"),
            vl=importlib.import_module("sam3.model.vl_combiner"),
            pos=importlib.import_module("sam3.model.position_encoding"),
            memory=importlib.import_module("sam3.model.memory"),
            predictor=importlib.import_module("sam3.model.sam3_tracking_predictor"),
            tracker_base=importlib.import_module("sam3.model.sam3_tracker_base"),
            transformer=importlib.import_module("sam3.sam.transformer"),
        )
    return ns


def _cpu_device(kwargs: dict[str, Any]) -> None:
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "cuda":
        kwargs["device"] = "cpu"


@contextmanager
def cpu_patches(mp: pytest.MonkeyPatch) -> Iterator[None]:
    """Map the oracle's CUDA allocations to CPU and its bf16 storage casts to a bf16 round trip (fp32 out)."""
    for fn_name in ("zeros", "ones", "empty", "full", "arange", "tensor", "randn", "zeros_like", "ones_like"):
        original: Callable[..., torch.Tensor] = getattr(torch, fn_name)

        def patched(*args: Any, _orig: Callable[..., torch.Tensor] = original, **kwargs: Any) -> torch.Tensor:
            _cpu_device(kwargs)
            return _orig(*args, **kwargs)

        mp.setattr(torch, fn_name, patched)
    mp.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    mp.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    original_to = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple("cpu" if (isinstance(a, str) and a.startswith("cuda")) else a for a in args)
        args = tuple(torch.device("cpu") if (isinstance(a, torch.device) and a.type == "cuda") else a for a in args)
        _cpu_device(kwargs)
        if args and args[0] is torch.bfloat16 and self.dtype == torch.float32:
            # Stored memories are bf16 on GPU; keep the rounding, stay in fp32 (no autocast on CPU).
            return original_to(original_to(self, torch.bfloat16), torch.float32)
        return original_to(self, *args, **kwargs)

    mp.setattr(torch.Tensor, "to", to)
    yield
