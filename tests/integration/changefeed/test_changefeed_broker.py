"""The project's own broker: started by the session fixture, reused, reported, stoppable."""

import time

from changefeed.broker import LocalBroker
from changefeed.config import BrokerSettings
from changefeed.kafka.admin import admin_client


def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    with admin_client(kafka_bootstrap) as admin:
        cluster = admin.describe_cluster()
    assert len(cluster["brokers"]) == 1
    host_ports = {(b["host"], b["port"]) for b in cluster["brokers"]}
    assert ("127.0.0.1", int(kafka_bootstrap.rsplit(":", 1)[1])) in host_ports


def test_second_start_reuses_the_running_broker(
    kafka_bootstrap: str, broker_settings: BrokerSettings
) -> None:
    broker = LocalBroker(broker_settings)
    before = broker.status()
    began = time.monotonic()
    after = broker.start()
    assert after.reachable
    assert after.pid == before.pid
    assert time.monotonic() - began < 5  # no new JVM was started


def test_status_of_a_broker_that_is_not_running(tmp_path) -> None:
    broker = LocalBroker(BrokerSettings(port=29992, controller_port=29993, home=tmp_path))
    status = broker.status()
    assert not status.running and not status.reachable
    assert "not running" in status.describe()
    assert broker.stop() is False


def test_broker_settings_disable_auto_create(
    kafka_bootstrap: str, broker_settings: BrokerSettings
) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    with admin_client(kafka_bootstrap) as admin:
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all"
        )["broker"]["1"]
    assert configs["auto.create.topics.enable"]["value"] == "false"
    assert configs["group.initial.rebalance.delay.ms"]["value"] == "0"
    assert configs["transaction.state.log.replication.factor"]["value"] == "1"
    assert configs["offsets.topic.replication.factor"]["value"] == "1"


def test_a_taken_controller_port_is_named_before_any_jvm_starts(tmp_path) -> None:
    import socket

    import pytest

    from changefeed.errors import BrokerError

    with socket.socket() as held, socket.socket() as probe:
        held.bind(("127.0.0.1", 0))
        held.listen()
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
        probe.close()
        controller_port = held.getsockname()[1]
        broker = LocalBroker(
            BrokerSettings(port=free_port, controller_port=controller_port, home=tmp_path)
        )
        with pytest.raises(BrokerError, match=f"controller port {controller_port} cannot be bound"):
            broker.start(timeout_s=5)
    assert not broker.pid_file.exists()


def test_a_cluster_id_that_begins_with_a_dash_formats(tmp_path, monkeypatch) -> None:
    """base64url ids begin with "-" one time in 64; the storage tool must not take it for an
    option."""
    import base64
    import os

    from changefeed.broker import local

    dashed = base64.urlsafe_b64encode(b"\xf8" + os.urandom(15)).decode().rstrip("=")
    assert dashed.startswith("-")
    monkeypatch.setattr(local, "_cluster_id", lambda: dashed)
    broker = LocalBroker(
        BrokerSettings(
            port=29994, controller_port=29995, home=BrokerSettings().home, state_root=tmp_path
        )
    )
    try:
        assert broker.start(timeout_s=180).reachable
        meta = (broker.data_dir / "meta.properties").read_text()
        assert f"cluster.id={dashed}" in meta
    finally:
        broker.stop()
