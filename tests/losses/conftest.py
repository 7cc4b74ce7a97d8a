"""Shared fixtures of the loss tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small dense linear algebra (eigh, lstsq) runs faster on one thread, and the CI cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
