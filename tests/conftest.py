import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: spawns launchers or trains for real; `pytest -m \"not slow\"` is the inner loop")
    config.addinivalue_line("markers", "slurm: needs a real (throwaway, local) Slurm cluster; skipped when it cannot start")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One-node Slurm on 127.0.0.1 for the session (apt-installs it as root when missing)."""
    from cluster.slurm_cluster import ClusterUnavailable, SlurmCluster

    try:
        cluster = SlurmCluster(str(tmp_path_factory.mktemp("slurm"))).start()
    except ClusterUnavailable as e:
        pytest.skip(f"no local Slurm cluster: {e}")
    yield cluster
    cluster.stop()
