"""The SECRET kind: credentials of every shape, each found by a detector module of its own.

One kind for the posture (a tenant turns secret masking on or off as a whole), several detectors for
the shapes: vendor API keys and AWS secret keys, JWTs and private key blocks, passwords in URLs, and
named secrets (``password=...``, ``"api_key": ...``, ``Authorization: Bearer ...``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from shared.pii.recognizers.base import Finding, TextScan
from shared.pii.recognizers.secret_assignments import AssignmentDetector
from shared.pii.recognizers.secret_tokens import JwtDetector, PrivateKeyDetector
from shared.pii.recognizers.secret_url_credentials import UrlCredentialDetector
from shared.pii.recognizers.secret_vendor_keys import SECRET_KIND, VendorKeyDetector


class SecretDetector(Protocol):
    def may_contain(self, scan: TextScan) -> bool: ...

    def find(self, scan: TextScan) -> Iterable[Finding]: ...


class SecretRecognizer:
    kind = SECRET_KIND
    placeholder = "<SECRET>"

    def __init__(self, detectors: Iterable[SecretDetector] | None = None) -> None:
        if detectors is None:
            detectors = (
                PrivateKeyDetector(), VendorKeyDetector(), JwtDetector(), UrlCredentialDetector(), AssignmentDetector()
            )
        self.detectors: tuple[SecretDetector, ...] = tuple(detectors)

    def may_contain(self, scan: TextScan) -> bool:
        return any(detector.may_contain(scan) for detector in self.detectors)

    def find(self, scan: TextScan) -> Iterator[Finding]:
        for detector in self.detectors:
            if detector.may_contain(scan):
                yield from detector.find(scan)

    def mask(self, value: str) -> str:
        return self.placeholder
