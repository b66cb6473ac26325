"""Shared by the stylegen test files (no tests of its own): one CPU thread per test module."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine is shared: two threads per process under contention run many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
