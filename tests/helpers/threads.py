"""One CPU thread per test module (the stylegen tests import the fixture)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine is shared: two threads per process under contention run many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
