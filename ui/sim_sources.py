"""What the collectors read from a running simulator: its endpoints and its log files."""

from __future__ import annotations

from vigil.collectors.log_file import TailedFile
from vigil.collectors.prometheus_scrape import ScrapeTarget
from vigil.sim.server import SimServer


def scrape_targets(sim: SimServer) -> list[ScrapeTarget]:
    """Every exporter the simulator serves, as a Prometheus scrape config would list them."""
    cluster, url = sim.cluster, sim.url
    targets: list[ScrapeTarget] = []
    for node in cluster.nodes:
        targets.append(ScrapeTarget(f"{url}/nodes/{node}/metrics", node, "dcgm-exporter"))
        targets.append(ScrapeTarget(f"{url}/nodes/{node}/node-exporter/metrics", node,
                                    "node-exporter"))
        if node in cluster.topo.job_of:
            targets.append(ScrapeTarget(f"{url}/nodes/{node}/trainer/metrics", node, "trainer"))
    targets += [ScrapeTarget(f"{url}/storage/{s}/metrics", s, "storage-exporter")
                for s in cluster.topo.storage]
    return targets


def tailed_files(sim: SimServer) -> list[TailedFile]:
    return [TailedFile(path, host, source) for path, host, source in sim.cluster.log_files()]
