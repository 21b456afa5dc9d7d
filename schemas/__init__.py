"""Avro schemas of changefeed records and the code that frames, encodes and evolves them.

``codec`` encodes and decodes records (Avro single-object encoding or Confluent framing),
``cloudevents`` builds and reads the CloudEvents Kafka headers that travel with them,
``evolution`` proves archived schema versions stay readable, ``errors`` holds the errors.
"""
