import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The test models are tiny: one thread is fastest, and robust on a shared, busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
