"""Vigil's settings: defaults, a YAML file and `VIGIL_*` environment variables, validated whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "VIGIL_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """Kafka client settings; the defaults suit the embedded Tansu broker (see DESIGN.md)."""

    bootstrap: str | None = Field(
        None, description="host:port list; unset starts the embedded broker on loopback"
    )
    partitions: int = Field(4, ge=1, description="partitions per topic created on start")
    # Tansu completes a group join only after about half the session timeout, so keep it short.
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    max_poll_interval_ms: int = Field(30000, ge=1000)
    max_poll_records: int = Field(5000, ge=1)
    fetch_max_wait_ms: int = Field(100, ge=0)
    linger_ms: int = Field(20, ge=0)
    # Tansu forgets producer ids when it restarts; idempotent producers then fail for good.
    idempotence: bool = False


class SimSettings(_Section):
    """The simulated cluster that `vigil up` serves as its default data source."""

    nodes: int = Field(4, ge=1, description="nodes in all; racks share them equally")
    racks: int = Field(1, ge=1)
    gpus_per_node: int = Field(8, ge=1, le=16)
    jobs: int = Field(1, ge=0, description="training jobs, each on an equal share of nodes")
    interval_s: float = Field(2.0, gt=0, description="seconds between telemetry samples")
    speed: float = Field(1.0, gt=0, description="simulated seconds per real second")
    seed: int = 7
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")


    @model_validator(mode="after")
    def _racks_divide_nodes(self) -> SimSettings:
        if self.nodes % self.racks:
            raise ValueError(f"nodes ({self.nodes}) must be a multiple of racks ({self.racks})")
        return self


CollectorName = Literal["sim", "scrape", "prometheus", "logs", "kernel", "journald", "host",
                        "nvml", "slurm", "kubernetes", "otlp"]


class ScrapeTargetSettings(_Section):
    url: str = Field(description="an exporter's /metrics URL")
    node: str = Field(description="the host it describes: host.name and the Kafka key")
    service: str = Field("exporter", description="service.name, e.g. dcgm-exporter")


class LogFileSettings(_Section):
    path: Path
    source: str = Field("app", description="log.source: kernel, training, ...")
    node: str | None = Field(None, description="default: collectors.node_name")
    multiline: list[Literal["python", "nccl", "indent"]] = Field(
        default_factory=list, description="rules that keep multi-line records whole")


class CollectorSettings(_Section):
    """Which collectors run (by name) and how. `sim` reads the simulated cluster `vigil up`
    starts; the others read real sources (see the README's Collectors section)."""

    enabled: list[CollectorName] = Field(default_factory=lambda: list[CollectorName](["sim"]))
    node_name: str | None = Field(None, description="this host's name; default: its hostname")
    # the simulator's endpoints and any exporter scraped directly
    scrape_interval_s: float = Field(5.0, gt=0)
    scrape_targets: list[ScrapeTargetSettings] = Field(default_factory=list)
    # an existing Prometheus
    prometheus_url: str | None = None
    prometheus_families: list[str] = Field(default_factory=list)
    prometheus_interval_s: float = Field(15.0, gt=0)
    prometheus_window_s: float | None = Field(None, gt=0, description="default: 2 intervals")
    # log files, the kernel log, journald units
    log_poll_interval_s: float = Field(0.5, gt=0)
    max_lines_per_message: int = Field(2000, ge=1)
    log_files: list[LogFileSettings] = Field(default_factory=list)
    log_max_line_bytes: int = Field(1 << 20, ge=1)
    log_rotate_wait_s: float = Field(5.0, gt=0)
    log_multiline_flush_s: float = Field(1.0, gt=0)
    log_from_start: bool = Field(False, description="with no checkpoint, read what is there")
    kernel_log_device: Path = Path("/dev/kmsg")
    journald_units: list[str] = Field(default_factory=list)
    # this host's /proc and /sys, its GPUs
    host_interval_s: float = Field(10.0, gt=0)
    host_root: str = Field("/", description="where the host's / is seen (/host in a container)")
    host_mount_timeout_s: float = Field(5.0, gt=0)
    host_net_exclude: str = Field(r"^(veth|cali|lxc)", description="interfaces to skip (regex)")
    nvml_interval_s: float = Field(10.0, gt=0)
    # schedulers
    slurm_interval_s: float = Field(30.0, gt=0)
    slurm_scontrol: str = "scontrol"
    kubernetes_interval_s: float = Field(15.0, gt=0)
    kubernetes_kubeconfig: str | None = Field(None, description="default: in-cluster or ~/.kube")
    kubernetes_context: str | None = None
    kubernetes_page_size: int = Field(500, ge=1)
    # OTLP/HTTP receiver
    otlp_host: str = "127.0.0.1"
    otlp_port: int = Field(4318, ge=0, le=65535, description="0 picks a free port")
    otlp_max_body_bytes: int = Field(16 << 20, ge=1)
    # between collectors and Kafka: memory, then disk, when Kafka is away
    spool_max_memory_bytes: int = Field(64 << 20, ge=1 << 20)
    spool_max_disk_bytes: int = Field(1 << 30, ge=1 << 20)

    @model_validator(mode="after")
    def _enabled_have_what_they_need(self) -> CollectorSettings:
        needs = {"scrape": ("scrape_targets", self.scrape_targets),
                 "prometheus": ("prometheus_url", self.prometheus_url),
                 "logs": ("log_files", self.log_files),
                 "journald": ("journald_units", self.journald_units)}
        for name, (key, value) in needs.items():
            if name in self.enabled and not value:
                raise ValueError(f"collector {name!r} is enabled but {key} is empty")
        if "prometheus" in self.enabled and not self.prometheus_families:
            raise ValueError("collector 'prometheus' is enabled but prometheus_families is empty")
        return self


class DetectSettings(_Section):
    detectors: list[str] = Field(default_factory=lambda: [
        "log_rules", "metric_rules", "peer", "log_novelty", "learned"])
    repeat_after_s: float = Field(3600.0, gt=0, description=(
        "repeats of a fault on an entity are dropped until this long after its last alert"))


class CorrelateSettings(_Section):
    window_s: float = Field(300.0, gt=0, description="alerts this close in time may join")


class ConsoleSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8501, ge=0, le=65535)


class TelemetrySettings(_Section):
    """Vigil's own metrics, served in Prometheus text format."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")


class Settings(BaseSettings):
    """All of Vigil's settings. Precedence: arguments > environment > YAML file > defaults."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_",
        env_nested_delimiter="_",
        env_nested_max_split=1,  # VIGIL_KAFKA_SESSION_TIMEOUT_MS -> kafka.session_timeout_ms
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(Path(".vigil"), description="run state, logs and the SQLite store")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    kafka: KafkaSettings = KafkaSettings()
    sim: SimSettings = SimSettings()
    collectors: CollectorSettings = CollectorSettings()
    detect: DetectSettings = DetectSettings()
    correlate: CorrelateSettings = CorrelateSettings()
    console: ConsoleSettings = ConsoleSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'vigil.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


class SettingsError(Exception):
    """Settings that cannot be used; the message lists every problem with its key and source."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from `config_file` (or $VIGIL_CONFIG), the environment and overrides.

    Every problem is reported at once, each with its dotted key and, for keys set in the
    file, the file name and line.
    """
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    file_data: Any = None
    if path is not None:
        file_data = _read_yaml(path)
    previous = os.environ.get(CONFIG_ENV)
    try:
        if path is not None:
            os.environ[CONFIG_ENV] = str(path)
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError([_describe(err, path, file_data) for err in exc.errors()]) from None
    finally:
        if previous is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = previous


def _read_yaml(path: Path) -> yaml.Node | None:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise SettingsError([f"{path}: not valid YAML: {exc}"]) from None
    if node is not None and not isinstance(node, yaml.MappingNode):
        raise SettingsError([f"{path}: the top level must be a mapping of settings"])
    return node


def _describe(error: Any, path: Path | None, root: yaml.Node | None) -> str:
    key = ".".join(str(part) for part in error["loc"])
    line = _line_of(root, error["loc"]) if root is not None else None
    where = f"{path}:{line}: " if line is not None else ""
    if error["type"] == "extra_forbidden":
        return f"{where}{key}: unknown key"
    return f"{where}{key}: {error['msg']} (got {error.get('input')!r})"


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line in the YAML file where the key at `loc` is written, if it is there."""
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return line if line is not None and part == loc[-1] else None
    return line
