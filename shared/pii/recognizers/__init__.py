"""The registry: one validated recognizer per entity kind. A kind asked for but not registered is an error.

PERSON is built by the engine itself: it needs the name gazetteer and, optionally, a spaCy NER pipeline.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.pii.recognizers.base import Finding, Recognizer, TextScan
from shared.pii.recognizers.card import CardRecognizer
from shared.pii.recognizers.email import EmailRecognizer
from shared.pii.recognizers.iban import IbanRecognizer
from shared.pii.recognizers.id_nik import IdNikRecognizer
from shared.pii.recognizers.id_npwp import IdNpwpRecognizer
from shared.pii.recognizers.ip_address import IpAddressRecognizer
from shared.pii.recognizers.phone import PhoneRecognizer
from shared.pii.recognizers.secret import SecretRecognizer
from shared.pii.recognizers.us_ssn import UsSsnRecognizer

REGISTRY: dict[str, Callable[[], Recognizer]] = {
    "EMAIL": EmailRecognizer,
    "PHONE": PhoneRecognizer,
    "CARD": CardRecognizer,
    "IBAN": IbanRecognizer,
    "US_SSN": UsSsnRecognizer,
    "IP_ADDRESS": IpAddressRecognizer,
    "ID_NIK": IdNikRecognizer,
    "ID_NPWP": IdNpwpRecognizer,
    "SECRET": SecretRecognizer,
}
# Kinds built from loaded data (gazetteer, model) rather than a plain factory; see recognizers.person.
MODEL_KINDS: frozenset[str] = frozenset({"PERSON"})

__all__ = ["MODEL_KINDS", "REGISTRY", "Finding", "Recognizer", "TextScan"]
