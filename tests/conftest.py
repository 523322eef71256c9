import os
import shutil
import tempfile

import pytest


def pytest_configure(config):
    # The suite's own machine cache (megajepa/data/machine_cache.py), shared by its launchers' children and
    # removed at the end: a test never reads what the user's runs cached, nor leaves entries behind.
    os.environ["MEGAJEPA_CACHE"] = config.megajepa_cache = tempfile.mkdtemp(prefix="megajepa-test-cache-")
    config.addinivalue_line("markers", "slow: spawns launchers or trains for real; `pytest -m \"not slow\"` is the inner loop")
    config.addinivalue_line("markers", "slurm: needs a real (throwaway, local) Slurm cluster; skipped when it cannot start")


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "megajepa_cache", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_installed():
    """Slurm's binaries, apt-installed as root when missing (as slurm_cluster does), no cluster started."""
    from cluster.slurm_cluster import ClusterUnavailable, ensure_installed

    try:
        ensure_installed()
    except ClusterUnavailable as e:
        pytest.skip(f"no Slurm: {e}")


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
