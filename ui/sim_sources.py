"""What the collectors read from a running simulator: its endpoints and its log files."""

from __future__ import annotations

from vigil.collectors.log_file import TailedFile
from vigil.collectors.prometheus_scrape import ScrapeTarget
from vigil.sim.server import SimServer


def scrape_targets(sim: SimServer) -> list[ScrapeTarget]:
    """Every exporter the simulator serves, as a Prometheus scrape config would list them."""
    return [ScrapeTarget(sim.url + e.path, e.host, e.service) for e in sim.cluster.endpoints()]


def tailed_files(sim: SimServer) -> list[TailedFile]:
    return [TailedFile(path, host, source) for path, host, source in sim.cluster.log_files()]
