"""Start, check and stop a single-node KRaft Kafka broker on 127.0.0.1.

One broker per port: its state (``server.properties``, data, logs, pid file) lives in
``BrokerSettings.state_dir``. ``start`` is idempotent: when the broker of that port is
already running and answering, it is reused. Readiness means the broker answered a
metadata request, never that some time has passed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from changefeed.broker.distribution import fetch_distribution
from changefeed.config import BrokerSettings
from changefeed.errors import BrokerError

_SERVER_PROPERTIES = """\
# Written by changefeed; edit BrokerSettings instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
# The project declares its topics (changefeed.topics); a typo must fail, not create one.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.ms=604800000
log.segment.bytes=67108864
log.retention.check.interval.ms=300000
"""

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
"""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    reachable: bool
    pid: int | None
    bootstrap: str
    log_file: Path

    def describe(self) -> str:
        if self.reachable:
            owner = f"pid {self.pid}" if self.pid else "not started by changefeed"
            return f"running at {self.bootstrap} ({owner}); log: {self.log_file}"
        if self.running:
            return f"process {self.pid} is up but {self.bootstrap} does not answer yet"
        return f"not running (would listen on {self.bootstrap})"


class LocalBroker:
    """The broker of one :class:`BrokerSettings` (one port, one state folder)."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.data_dir = self.state_dir / "data"
        self.log_dir = self.state_dir / "logs"
        self.pid_file = self.state_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    # -- status -------------------------------------------------------------------------
    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        running = pid is not None and pid_alive(pid)
        reachable = _answers_metadata(self.settings.bootstrap, timeout_s=3.0)
        return BrokerStatus(
            running=running,
            reachable=reachable,
            pid=pid if running else None,
            bootstrap=self.settings.bootstrap,
            log_file=self.log_file,
        )

    # -- start --------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> BrokerStatus:
        """Start the broker (or reuse the running one) and return once it answers."""
        current = self.status()
        if current.reachable:
            return current
        if current.running:
            return self._wait_ready(current.pid, timeout_s)  # type: ignore[arg-type]
        if _port_in_use(self.settings.host, self.settings.port):
            raise BrokerError(
                f"port {self.settings.port} is taken by a process that is not a Kafka broker; "
                "choose another with CHANGEFEED_BROKER_PORT"
            )
        ports = (
            ("port", self.settings.port, "CHANGEFEED_BROKER_PORT"),
            ("controller port", self.settings.controller_port, "CHANGEFEED_CONTROLLER_PORT"),
        )
        for name, port, variable in ports:
            if not _port_bindable(self.settings.host, port):
                raise BrokerError(
                    f"the broker's {name} {port} cannot be bound on {self.settings.host}: "
                    "another socket holds it (a listener, or a connection whose local port it "
                    f"is, when it lies in the system's ephemeral range); choose another with "
                    f"{variable}"
                )
        libs = fetch_distribution(self.settings.dist_dir, self.settings.kafka_version)
        classpath = str(libs / "*")
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(classpath)
        pid = self._launch(classpath)
        return self._wait_ready(pid, timeout_s)

    def _write_config(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        (self.state_dir / "server.properties").write_text(
            _SERVER_PROPERTIES.format(
                host=s.host, port=s.port, controller_port=s.controller_port, data_dir=self.data_dir
            )
        )
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2.format(log_dir=self.log_dir))

    def _format(self, classpath: str) -> None:
        cmd = [
            *self._java(classpath),
            "kafka.tools.StorageTool",
            "format",
            # One argument, not two: an id may begin with "-", which the tool's parser
            # would take for an option.
            f"--cluster-id={_cluster_id()}",
            "--config",
            str(self.state_dir / "server.properties"),
            "--ignore-formatted",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")

    def _java(self, classpath: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.settings.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            classpath,
        ]

    def _launch(self, classpath: str) -> int:
        cmd = [*self._java(classpath), "kafka.Kafka", str(self.state_dir / "server.properties")]
        with open(self.log_dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, pid: int, timeout_s: float) -> BrokerStatus:
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise BrokerError(
                    f"the Kafka broker (pid {pid}) exited during start-up; last log lines:\n"
                    + self.log_tail()
                )
            if _answers_metadata(self.settings.bootstrap, timeout_s=2.0) and _groups_answer(
                self.settings.bootstrap
            ):
                return self.status()
            time.sleep(delay)  # polling a condition, with backoff
            delay = min(delay * 2, 1.0)
        raise BrokerError(
            f"the Kafka broker did not answer on {self.settings.bootstrap} within {timeout_s:.0f}s;"
            f" last log lines:\n{self.log_tail()}"
        )

    # -- stop ---------------------------------------------------------------------------
    def stop(self, timeout_s: float = 60.0, *, kill: bool = False) -> bool:
        """Stop the broker this state folder started; True when one was running.

        ``kill=True`` sends SIGKILL at once (a crash), otherwise SIGTERM and a controlled
        shutdown, escalating to SIGKILL after ``timeout_s``.
        """
        pid = self._read_pid()
        if pid is None or not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for f in (self.log_dir / "stdout.log", self.log_file):
            if f.exists():
                chunks.extend(f.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(chunks[-lines:]) or "(no log yet)"

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def broker_for(bootstrap: str | None) -> tuple[str, LocalBroker | None]:
    """``bootstrap`` when given; else the project's local broker, started if need be. The
    broker comes back only when this call started it, for the caller to stop."""
    if bootstrap:
        return bootstrap, None
    broker = LocalBroker(BrokerSettings())
    already = broker.status().reachable
    status = broker.start()
    return status.bootstrap, None if already else broker


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
    with contextlib.suppress(ChildProcessError):  # reap our child, so no zombie lingers
        os.waitpid(pid, os.WNOHANG)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _port_bindable(host: str, port: int) -> bool:
    """True when a listener could bind ``host:port`` now (as the JVM does, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _groups_answer(bootstrap: str) -> bool:
    """True when the broker has a group coordinator (its offsets topic exists)."""
    from changefeed.kafka.admin import groups_answer

    return groups_answer(bootstrap, timeout_s=2.0)


def _answers_metadata(bootstrap: str, timeout_s: float) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request."""
    from changefeed.kafka.admin import metadata_answers

    return metadata_answers(bootstrap, timeout_s=timeout_s)
