"""A real, local Apache Kafka broker (KRaft, single node) for the demo and the tests."""

from changefeed.broker.local import BrokerStatus, LocalBroker, broker_for

__all__ = ["BrokerStatus", "LocalBroker", "broker_for"]
