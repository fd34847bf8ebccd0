"""The collectors `collectors.enabled` names, built from settings: the one place knowing them all.

Every collector publishes through the same `Publisher` (the spool in front of Kafka, in
`vigil up`). A name may stand for more than one component (`sim` scrapes and tails), and a
collector that finds nothing to read where it runs (NVML without a GPU) switches itself off.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vigil.collectors.base import Publisher
from vigil.collectors.host import HostCollector
from vigil.collectors.journald import unit_journal_collector
from vigil.collectors.kernel_log import kernel_log_collector
from vigil.collectors.kubernetes import KubernetesCollector
from vigil.collectors.log_file import LogFileCollector, TailedFile
from vigil.collectors.nvml import NvmlCollector
from vigil.collectors.otlp_receiver import OtlpReceiver
from vigil.collectors.prometheus_query import PrometheusQueryCollector
from vigil.collectors.prometheus_scrape import PrometheusScrapeCollector, ScrapeTarget
from vigil.collectors.slurm import SlurmCollector
from vigil.sim.server import SimServer
from vigil.topology.kubernetes import KubernetesError, core_api
from vigil.ui.sim_sources import scrape_targets, tailed_files

from vigil.settings import CollectorName, CollectorSettings


class Component(Protocol):
    name: str

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


class CollectorSetupError(ValueError):
    """A collector cannot be built from these settings; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Context:
    settings: CollectorSettings
    publisher: Publisher
    node: str  # this host's name, for collectors that read this host
    checkpoints: Path  # a folder for collectors' checkpoint files
    sim: SimServer | None  # the simulated cluster, when `vigil up` runs one


def build_collectors(settings: CollectorSettings, publisher: Publisher, data_dir: Path,
                     sim: SimServer | None = None) -> list[Component]:
    """The components for `settings.enabled`, in order, not started."""
    checkpoints = data_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    context = Context(settings, publisher, settings.node_name or socket.gethostname(),
                      checkpoints, sim)
    return [component for name in dict.fromkeys(settings.enabled)
            for component in BUILDERS[name](context)]


def _sim(c: Context) -> list[Component]:
    if c.sim is None:
        raise CollectorSetupError("collector 'sim' reads the simulated cluster, which is not "
                                  "running here; remove it from collectors.enabled")
    s = c.settings
    return [
        PrometheusScrapeCollector(c.publisher, scrape_targets(c.sim), s.scrape_interval_s),
        LogFileCollector(c.publisher, tailed_files(c.sim), s.log_poll_interval_s,
                         s.max_lines_per_message, name="sim_logs"),
    ]


def _scrape(c: Context) -> list[Component]:
    targets = [ScrapeTarget(t.url, t.node, t.service) for t in c.settings.scrape_targets]
    return [PrometheusScrapeCollector(c.publisher, targets, c.settings.scrape_interval_s,
                                      name="scrape")]


def _prometheus(c: Context) -> list[Component]:
    s = c.settings
    assert s.prometheus_url is not None  # the settings validator saw to it
    try:
        return [PrometheusQueryCollector(c.publisher, s.prometheus_url, s.prometheus_families,
                                         s.prometheus_interval_s, s.prometheus_window_s)]
    except ValueError as exc:
        raise CollectorSetupError(f"collectors.prometheus_families: {exc}") from None


def _logs(c: Context) -> list[Component]:
    s = c.settings
    files = [TailedFile(f.path, f.node or c.node, f.source, tuple(f.multiline))
             for f in s.log_files]
    return [LogFileCollector(
        c.publisher, files, s.log_poll_interval_s, s.max_lines_per_message,
        from_start=s.log_from_start, checkpoint=c.checkpoints / "log_file.json",
        max_line_bytes=s.log_max_line_bytes, multiline_flush_s=s.log_multiline_flush_s,
        rotate_wait_s=s.log_rotate_wait_s)]


def _kernel(c: Context) -> list[Component]:
    s = c.settings
    return [kernel_log_collector(c.publisher, c.node, s.log_poll_interval_s,
                                 s.max_lines_per_message, checkpoint=c.checkpoints / "kernel.json",
                                 device=s.kernel_log_device)]


def _journald(c: Context) -> list[Component]:
    s = c.settings
    return [unit_journal_collector(c.publisher, c.node, s.journald_units, s.max_lines_per_message,
                                   checkpoint=c.checkpoints / "journald.json")]


def _host(c: Context) -> list[Component]:
    s = c.settings
    try:
        return [HostCollector(c.publisher, c.node, s.host_interval_s, root=s.host_root,
                              mount_timeout_s=s.host_mount_timeout_s,
                              net_exclude=s.host_net_exclude)]
    except ValueError as exc:
        raise CollectorSetupError(f"collectors.host_root: {exc}") from None


def _nvml(c: Context) -> list[Component]:
    return [NvmlCollector(c.publisher, c.node, c.settings.nvml_interval_s)]


def _slurm(c: Context) -> list[Component]:
    s = c.settings
    return [SlurmCollector(c.publisher, s.slurm_interval_s, scontrol=s.slurm_scontrol)]


def _kubernetes(c: Context) -> list[Component]:
    s = c.settings
    try:
        api = core_api(s.kubernetes_kubeconfig, s.kubernetes_context)
    except KubernetesError as exc:
        raise CollectorSetupError(f"collectors.kubernetes_kubeconfig: {exc}") from None
    return [KubernetesCollector(c.publisher, api, s.kubernetes_interval_s,
                                page_size=s.kubernetes_page_size)]


def _otlp(c: Context) -> list[Component]:
    s = c.settings
    return [OtlpReceiver(c.publisher, host=s.otlp_host, port=s.otlp_port, default_node=c.node,
                         max_body_bytes=s.otlp_max_body_bytes)]


BUILDERS: dict[CollectorName, Callable[[Context], list[Component]]] = {
    "sim": _sim, "scrape": _scrape, "prometheus": _prometheus, "logs": _logs,
    "kernel": _kernel, "journald": _journald, "host": _host, "nvml": _nvml, "slurm": _slurm,
    "kubernetes": _kubernetes, "otlp": _otlp,
}
