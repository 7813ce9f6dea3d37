"""PII detection and masking for the redactor: a registry of small recognizers, one per entity kind."""

from shared.pii.engine import (
    ALL_KINDS,
    ALWAYS_ON,
    DetectionUnavailable,
    PiiEngine,
    Redaction,
    build_engine,
)

__all__ = ["ALL_KINDS", "ALWAYS_ON", "DetectionUnavailable", "PiiEngine", "Redaction", "build_engine"]
