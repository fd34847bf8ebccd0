"""Collectors: turn each telemetry source into OTLP batches on Kafka."""
