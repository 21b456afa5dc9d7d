"""docker/compose.yaml and docker/Dockerfile agree with the code they run.

The structural tests need only PyYAML. ``test_compose_config_is_valid`` hands the file to
``docker compose config``, which validates it against the Compose specification; it needs
the Compose CLI (no engine) and is skipped where that is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from changefeed.cli import check_usage, cli
from changefeed.config import KAFKA_VERSION, SEVEN_DAYS_MS

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

APP_SERVICES = ("topics-init", "worker", "api", "demo-api", "loadgen")
SCALED_SERVICES = ("worker", "api")
TEST_SECRET = "compose-test-secret-0123456789"
ONE_SHOT_SERVICES = {"topics-init", "loadgen"}


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, whether written as a mapping or a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): _interpolate(_scalar(v)) for k, v in raw.items()}


def _scalar(value: object) -> str:
    # YAML turns an unquoted false into a bool; Compose passes it on as "false".
    return str(value).lower() if isinstance(value, bool) else str(value)


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _interpolate(text: str) -> str:
    """Resolve ``${VAR:-default}`` to its default, as Compose does with VAR unset, and a
    required ``${VAR:?message}`` to the value the tests give it."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(2) == "?":
            assert match.group(1) == "CHANGEFEED_SECRET", f"unexpected required {match.group(0)}"
            return TEST_SECRET
        return match.group(3) or ""

    return _INTERPOLATION.sub(resolve, text).replace("$$", "$")


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "use the exec (list) form for commands"
    return [_interpolate(str(arg)) for arg in command]


def _subcommand_paths(
    group: click.Group = cli, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every complete subcommand path the CLI offers, e.g. ("topics", "ensure")."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _subcommand_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def _dependency(service: dict[str, Any], name: str) -> str | None:
    """The condition ``service`` waits for on ``name``, or None if it does not depend on it."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return "service_started" if name in depends else None
    if name not in depends:
        return None
    return (depends[name] or {}).get("condition", "service_started")


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        target = entry["target"] if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    pairs = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        pairs.append((instruction.upper(), args.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def _final_env() -> dict[str, str]:
    """ENV of the runtime stage (``KEY=value`` form only)."""
    words = " ".join(args for ins, args in _final_stage() if ins == "ENV").split()
    return dict(w.split("=", 1) for w in words if "=" in w)


def _is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


# --- kafka ---------------------------------------------------------------------------------


def test_kafka_image_is_the_version_the_project_pins(services: dict[str, dict[str, Any]]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_kafka_is_single_node_kraft_without_auto_create(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _env(services["kafka"])
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@")
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listener_names = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    mapped = {item.split(":")[0] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
    assert controller in listener_names
    assert listener_names <= mapped
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert int(env["KAFKA_LOG_RETENTION_MS"]) == SEVEN_DAYS_MS


def test_kafka_data_is_on_a_named_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    log_dir = _env(kafka)["KAFKA_LOG_DIRS"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in kafka.get("volumes", [])}
    assert log_dir in mounts, "KAFKA_LOG_DIRS must be a mounted volume"
    assert mounts[log_dir] in (compose.get("volumes") or {})


def test_app_services_reach_kafka_on_an_advertised_listener(
    services: dict[str, dict[str, Any]],
) -> None:
    advertised = _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {item.split("://", 1)[1] for item in advertised.split(",")}
    for name in APP_SERVICES:
        assert _env(services[name])["CHANGEFEED_BOOTSTRAP"] in addresses, name


# --- services ------------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name} runs once and must not restart"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependency_chain(services: dict[str, dict[str, Any]]) -> None:
    assert _dependency(services["topics-init"], "kafka") == "service_healthy"
    for name in ("worker", "api", "demo-api"):
        assert _dependency(services[name], "topics-init") == "service_completed_successfully"
    assert _dependency(services["loadgen"], "demo-api") == "service_healthy"
    assert _dependency(services["loadgen"], "worker") == "service_healthy"


def test_loadgen_is_opt_in(services: dict[str, dict[str, Any]]) -> None:
    assert services["loadgen"].get("profiles") == ["demo"]
    for name, service in services.items():
        if name != "loadgen":
            assert not service.get("profiles"), f"{name} must start with a plain `up`"


def test_app_services_build_the_project_image(
    services: dict[str, dict[str, Any]],
) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["image"] == f"changefeed:{version}", name
        build = service["build"]
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_compose_commands_are_cli_subcommands(services: dict[str, dict[str, Any]]) -> None:
    offered = set(_subcommand_paths())
    assert ("topics", "ensure") in offered and ("worker",) in offered
    for name in APP_SERVICES:
        command = _command(services[name])
        matches = [p for p in offered if tuple(command[: len(p)]) == p]
        assert matches, f"{name}: {command} starts with no `changefeed` subcommand"
        # The whole argument list must parse too (flags and their value types).
        try:
            check_usage(command)
        except click.UsageError as exc:
            pytest.fail(f"{name}: `changefeed {' '.join(command)}` does not parse ({exc})")


def test_commands_match_their_service(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["topics-init"]) == ["topics", "ensure"]
    assert _command(services["worker"]) == ["worker"]
    assert _command(services["api"]) == ["api"]
    assert _command(services["demo-api"]) == ["demo-api"]
    assert _command(services["loadgen"])[0] == "loadgen"


def test_http_services_listen_on_their_published_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, port_var in (
        ("worker", "CHANGEFEED_WORKER_PORT"),
        ("api", "CHANGEFEED_EVENTS_API_PORT"),
        ("demo-api", "CHANGEFEED_DEMO_API_PORT"),
    ):
        env = _env(services[name])
        assert env["CHANGEFEED_API_HOST"] == "0.0.0.0", f"{name} must listen beyond loopback"
        assert int(env[port_var]) in _container_ports(services[name]), name


def test_scaled_services_clash_on_no_host_port_and_share_no_state(
    services: dict[str, dict[str, Any]],
) -> None:
    """``--scale worker=2 --scale api=2`` works: no fixed host port, no shared data dir
    (RocksDB and the feed index lock their files); the Dockerfile's VOLUME gives each
    container a volume of its own."""
    for name in SCALED_SERVICES:
        service = services[name]
        assert not service.get("container_name"), name
        for entry in service.get("ports", []):
            if isinstance(entry, dict):
                assert not entry.get("published"), f"{name} publishes a fixed host port"
                continue
            parts = str(entry).split(":")
            host_port = parts[-2] if len(parts) >= 2 else ""
            assert host_port == "", f"{name}: {entry} fixes the host port"
        data_dir = _env(service)["CHANGEFEED_DATA_DIR"]
        for volume in service.get("volumes", []):
            assert str(volume).split(":")[1] != data_dir, f"{name} shares its data dir"
    assert _final_env()["CHANGEFEED_DATA_DIR"] == "/var/lib/changefeed"


def test_every_process_shares_one_secret(services: dict[str, dict[str, Any]]) -> None:
    """Cursors signed by one API server or worker are accepted by every other one."""
    secrets = {_env(services[name]).get("CHANGEFEED_SECRET") for name in APP_SERVICES}
    assert secrets == {TEST_SECRET}, "every app service must take CHANGEFEED_SECRET"
    raw = COMPOSE_FILE.read_text()
    assert "${CHANGEFEED_SECRET:?" in raw, "no default secret: compose must require one"


def test_api_server_forwards_subject_state_to_the_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _env(services["api"])
    worker_port = _env(services["worker"])["CHANGEFEED_WORKER_PORT"]
    assert env["CHANGEFEED_WORKER_URL"] == f"http://worker:{worker_port}"


def test_pulled_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert _is_pinned(service["image"]), f"{name}: {service['image']} is not pinned"


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_base_images_are_pinned() -> None:
    stages: set[str] = set()
    bases = []
    for instruction, args in _dockerfile_instructions():
        if instruction != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() not in stages:
            bases.append(image)
    assert bases, "no FROM line"
    for image in bases:
        assert "$" not in image, f"resolve {image} in the FROM line so it can be checked"
        assert _is_pinned(image), f"{image} is not pinned"
    assert any(image.startswith("python:3.11") for image in bases)


def test_dockerfile_runtime_is_not_root() -> None:
    users = [args for instruction, args in _final_stage() if instruction == "USER"]
    assert users, "the runtime stage must switch to an unprivileged USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runtime runs as {users[-1]}"


def test_dockerfile_entrypoint_and_command() -> None:
    stage = _final_stage()
    last = dict(stage)  # the last of each instruction is the one in force
    assert json.loads(last["ENTRYPOINT"]) == ["changefeed"]
    assert json.loads(last["CMD"]) == ["worker"]
    exposed = " ".join(args for ins, args in stage if ins == "EXPOSE").split()
    assert {"6066", "6067", "8000"} <= set(exposed)
    assert _final_env()["PYTHONUNBUFFERED"] == "1"


def test_dockerfile_data_dir_is_a_volume() -> None:
    data_dir = _final_env()["CHANGEFEED_DATA_DIR"]
    volumes = [args for ins, args in _final_stage() if ins == "VOLUME"]
    assert any(data_dir in json.loads(v) for v in volumes), f"{data_dir} is not a VOLUME"


# --- the Compose CLI itself ----------------------------------------------------------------


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30
    )
    return [docker, "compose"] if probe.returncode == 0 else None


def test_compose_config_is_valid() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the Docker Compose CLI (`docker compose`) is not installed")
    env = {**os.environ, "CHANGEFEED_SECRET": TEST_SECRET}
    for profile_args in ([], ["--profile", "demo"]):
        result = subprocess.run(
            [*cli, "-f", str(COMPOSE_FILE), *profile_args, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env,
        )
        assert result.returncode == 0, result.stderr
