"""Test fixtures for real PostgreSQL, Kafka and SMTP (loaded as a pytest plugin)."""
