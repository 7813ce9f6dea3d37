"""The registry: one validated recognizer per entity kind. A kind asked for but not registered is an error."""

from __future__ import annotations

from collections.abc import Callable

from services.redactor.pii.recognizers.base import Finding, Recognizer
from services.redactor.pii.recognizers.email import EmailRecognizer
from services.redactor.pii.recognizers.phone import PhoneRecognizer
from services.redactor.pii.recognizers.us_ssn import UsSsnRecognizer

REGISTRY: dict[str, Callable[[], Recognizer]] = {
    "EMAIL": EmailRecognizer,
    "PHONE": PhoneRecognizer,
    "US_SSN": UsSsnRecognizer,
}

__all__ = ["REGISTRY", "Finding", "Recognizer"]
