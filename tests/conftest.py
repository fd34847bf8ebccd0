"""Fixtures more than one test folder needs: the shipped fault library and a simulated cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from vigil.diagnosis.library import FaultLibrary, load_library
from vigil.sim.clock import SimClock
from vigil.sim.cluster import SimCluster
from vigil.sim.server import SimServer

SIM_START = 1_718_000_000.0  # the simulated cluster's clock when a test's cluster is built


@pytest.fixture(scope="session")
def library() -> FaultLibrary:
    """The library shipped with Vigil; its models are frozen, so one load serves every test."""
    return load_library()


@pytest.fixture
def cluster(library: FaultLibrary, tmp_path: Path) -> SimCluster:
    """Two HGX nodes of eight GPUs running one job, seeded, writing logs under tmp_path/sim."""
    return SimCluster(library, tmp_path / "sim", nodes=2, gpus_per_node=8, seed=7, now=SIM_START)


@pytest.fixture(scope="module")
def sim_server(
    library: FaultLibrary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimServer]:
    """A cluster like `cluster`, served on a free loopback port, shared by one test module.

    Shared because stopping the server waits out `serve_forever`'s 0.5 s poll; tests that
    inject must heal what they broke (`cluster.heal_all`) or compare before and after. The
    server's clock starts at SIM_START, like the cluster's, and its thread waits an hour, so
    values change only when a test calls `step()` itself.
    """
    served = SimCluster(library, tmp_path_factory.mktemp("sim"), nodes=2, gpus_per_node=8,
                        seed=7, now=SIM_START)
    server = SimServer(served, "127.0.0.1", 0, interval_s=3600.0,
                       clock=SimClock(origin=SIM_START))
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
