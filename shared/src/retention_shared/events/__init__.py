"""The event envelope and the catalogue of event types."""

from retention_shared.events.catalogue import CATALOGUE, EventSpec, spec_for
from retention_shared.events.envelope import Envelope, EnvelopeError, decode_envelope, partition_key

__all__ = [
    "CATALOGUE",
    "Envelope",
    "EnvelopeError",
    "EventSpec",
    "decode_envelope",
    "partition_key",
    "spec_for",
]
