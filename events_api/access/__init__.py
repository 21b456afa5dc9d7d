"""API keys of the events API: how they are made, stored, looked up and checked.

A key is shown once, when it is created; only a SHA-256 digest of it is ever stored. Keys
live in a compacted Kafka topic (``api_keys``) that the CLI writes and every worker reads
into memory, so all workers of a deployment agree on them without a database of their own.
"""
