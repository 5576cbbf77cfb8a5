import pytest
import torch

# Two cores: one thread per test process avoids oversubscription (a step ran 6x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """One throw-away single-node Slurm cluster for every test that asks for it (test_slurm*.py);
    skipped where Slurm cannot be installed."""
    from slurm_cluster import SlurmCluster, install_slurm

    why = install_slurm()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
