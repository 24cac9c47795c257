"""Distill tests run the real CLI and torch in-process; each test restores torch's thread count."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
