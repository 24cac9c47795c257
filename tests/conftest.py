"""Shared fixtures: the VNN-COMP 2021 folder and small hand-built networks.

Tests are grouped by the package they test (``tests/encoders``, ``tests/verifier``, ``tests/distill``,
``tests/benchmarks``); the shared helpers ``netkit`` and ``oracle`` live here, in ``tests/``, which is put on
``sys.path`` so that every group imports them the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest

_CANDIDATES = [
    os.environ.get("DISTILLCERT_SHARED", ""),
    str(Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "vnncomp2021"),
]


def shared_root() -> Path | None:
    """The ``vnncomp2021`` folder beside the repository (``../shared/benchmarks/vnncomp2021``)."""
    for c in _CANDIDATES:
        if c and (Path(c) / "acasxu").is_dir():
            return Path(c).resolve()
    return None


@pytest.fixture(scope="session")
def vnncomp_root() -> Path:
    root = shared_root()
    if root is None:
        pytest.skip("../shared/benchmarks/vnncomp2021 is absent (a fresh clone has none; CI always has it)")
    return root


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the networks here are tiny, and extra threads only contend for 2 cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests that run the CLI in-process may change torch's thread count; put it back after each."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
