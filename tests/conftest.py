"""Fixtures shared by every test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run tiny models on small inputs: one thread avoids OpenMP spinning on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
