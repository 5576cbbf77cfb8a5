import pytest
import torch

# Two cores: one thread per test process avoids oversubscription (a step ran 6x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
