"""Thin, typed wrappers around the Kafka admin client: connection, topics as code."""
