"""Messaging: ports, the Kafka and embedded adapters, the outbox relay and the consumer runner."""
