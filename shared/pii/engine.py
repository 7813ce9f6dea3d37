"""The PII engine: runs the registered recognizers over a text and masks what they find."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.pii.context import CONTEXT_WORDS
from shared.pii.names import GazetteerUnavailable
from shared.pii.recognizers import MODEL_KINDS, REGISTRY, Finding, Recognizer, TextScan
from shared.pii.recognizers.person import DEFAULT_NER_MODEL, PersonRecognizer, load_ner_model

# A longer field is not scanned at all (it is withheld), so one pathological value cannot stall the worker.
MAX_FIELD_CHARS = 256 * 1024
# No entity is shorter than this ("1.1.1.1", "a@b.io" and the shortest named secret need more), so shorter
# values skip detection unless a JSON key gives them a meaning of their own ({"pin": "1234"} aside).
_SHORTEST_ENTITY = 6
# JSON numbers this long can be card numbers, NIKs or phone numbers written without quotes.
_SMALLEST_NUMERIC_ENTITY = 1_000_000
# Attribute values repeat endlessly ("xterm", "linux", "firstParty", a plugin name): short texts' findings
# are remembered, up to this many distinct texts per engine, then forgotten all at once.
_MEMO_MAX_CHARS = 64
_MEMO_ENTRIES = 4096
# Longer texts found clean are remembered too (by text and JSON key), the least recently used forgotten first,
# up to this many characters in all: API errors, commands and tool input recur across batches and sessions,
# while unique prose only passes through. A text longer than _CLEAN_MAX_TEXT is scanned each time (it would
# push out many shorter ones).
_CLEAN_MEMO_CHARS = 2 * 1024 * 1024
_CLEAN_MAX_TEXT = 16 * 1024
# A longer text with findings recurs too (an API error quoting the user's e-mail, a command with a phone
# number): from its second sighting on, its findings (spans and kinds, never the text) are kept under a digest
# of the text and its JSON key, keyed with a random secret of the engine, so it keeps no copy of such a text
# and its memory cannot confirm a guess at one. Up to this many texts, then forgotten all at once.
_FOUND_ENTRIES = 4096
# What ``_found`` answers for a hash it has never seen (compared by identity).
_NOT_SEEN: tuple[bytes, list[Finding]] = (b"", [])


class DetectionUnavailable(Exception):
    """Detection failed or ran over its time budget; the caller withholds the field."""


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: Mapping[str, int]


def _resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the strongest of overlapping findings: priority first, then the longer span, then the earlier.

    The kept findings never overlap, so they are kept sorted by start and each candidate is checked against
    its two neighbours only (a field with thousands of findings must not cost a quadratic pass).
    """
    ranked = sorted(findings, key=lambda f: (-f.priority, -(f.end - f.start), f.start))
    starts: list[int] = []
    kept: list[Finding] = []
    for finding in ranked:
        index = bisect.bisect_left(starts, finding.start)
        if index < len(kept) and kept[index].start < finding.end:
            continue
        if index > 0 and kept[index - 1].end > finding.start:
            continue
        starts.insert(index, finding.start)
        kept.insert(index, finding)
    return kept


class PiiEngine:
    def __init__(self, recognizers: Sequence[Recognizer], field_time_budget_ms: float) -> None:
        self.recognizers = tuple(recognizers)
        self.kinds = frozenset(r.kind for r in recognizers)
        self._by_kind = {r.kind: r for r in recognizers}
        self._budget_s = field_time_budget_ms / 1000.0
        # Without a secret recognizer a short JSON value under a "password" key is nothing to us.
        self._key_context_matters = "SECRET" in self.kinds
        self._memo: dict[tuple[str | None, str], list[Finding]] = {}
        self._clean: OrderedDict[tuple[str | None, str], None] = OrderedDict()
        self._clean_chars = 0
        self._found: dict[int, tuple[bytes, list[Finding]] | None] = {}
        self._digest_key = os.urandom(32)

    def find(self, text: str, field_name: str | None = None) -> list[Finding]:
        """The entities in ``text``, overlaps resolved, in text order (for reports and the quality harness)."""
        return self._find(text, field_name, time.perf_counter() + self._budget_s)

    def redact_text(self, text: str) -> Redaction:
        findings = self._find_remembered(text, None, time.perf_counter() + self._budget_s)
        if not findings:
            return Redaction(text, {})
        counts: Counter[str] = Counter()
        return Redaction(self._masked(text, findings, counts), dict(counts))

    def redact_json_text(self, text: str) -> Redaction:
        """Masks inside string values only: keys and structure stay, and the result is valid JSON."""
        stripped = text.lstrip()
        if not stripped.startswith(("{", "[")):
            return self.redact_text(text)
        try:
            document = json.loads(text)
        except ValueError:
            return self.redact_text(text)
        counts: Counter[str] = Counter()
        deadline = time.perf_counter() + self._budget_s
        masked = self._redact_json_value(document, None, counts, deadline)
        return Redaction(json.dumps(masked, ensure_ascii=False, separators=(",", ":")), dict(counts))

    def _find_remembered(self, text: str, field_name: str | None, deadline: float) -> list[Finding]:
        """``_find``, remembered for short texts and for longer ones found clean (with the JSON key they came
        under, which can change them)."""
        if len(text) > _MEMO_MAX_CHARS:
            return self._find_unless_clean(text, field_name, deadline)
        findings = self._memo.get((field_name, text))
        if findings is None:
            findings = self._find(text, field_name, deadline)
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[(field_name, text)] = findings
        return findings

    def _find_unless_clean(self, text: str, field_name: str | None, deadline: float) -> list[Finding]:
        key = (field_name, text)
        if key in self._clean:
            self._clean.move_to_end(key)
            return []
        if len(text) > _CLEAN_MAX_TEXT:
            return self._find(text, field_name, deadline)
        # Looked up by the key's hash (Python's, keyed per process and already worked out for ``_clean``),
        # then confirmed by the digest. A text with findings seen for the first time leaves its hash only; the
        # digest is worked out when a text with that hash comes again: unique texts pay no digest at all.
        slot = hash(key)
        remembered = self._found.get(slot, _NOT_SEEN)
        digest = None
        if remembered is not None and remembered is not _NOT_SEEN:
            digest = self._digest(text, field_name)
            if remembered[0] == digest:
                return remembered[1]
        findings = self._find(text, field_name, deadline)
        if findings:
            if len(self._found) >= _FOUND_ENTRIES:
                self._found.clear()
            if remembered is _NOT_SEEN:
                self._found[slot] = None
            else:
                self._found[slot] = (digest or self._digest(text, field_name), findings)
        else:
            self._clean[key] = None
            self._clean_chars += len(text)
            while self._clean_chars > _CLEAN_MEMO_CHARS:
                (_, forgotten), _ = self._clean.popitem(last=False)
                self._clean_chars -= len(forgotten)
        return findings

    def _digest(self, text: str, field_name: str | None) -> bytes:
        """A keyed digest of the text and its JSON key (None apart from any key), for ``_found``."""
        digest = hashlib.blake2b(key=self._digest_key, digest_size=32)
        if field_name is not None:
            name = field_name.encode("utf-8", "surrogatepass")
            digest.update(len(name).to_bytes(8, "big"))
            digest.update(name)
        digest.update(b"\xff" if field_name is None else b"\x00")
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def _find(self, text: str, field_name: str | None, deadline: float) -> list[Finding]:
        if len(text) > MAX_FIELD_CHARS:
            raise DetectionUnavailable(f"field of {len(text)} characters is over the detection limit")
        if len(text) < _SHORTEST_ENTITY and not (field_name and self._key_context_matters):
            return []
        scan = TextScan(text, field_name)
        findings: list[Finding] = []
        try:
            for recognizer in self.recognizers:
                if recognizer.may_contain(scan):
                    findings.extend(recognizer.find(scan))
                    if time.perf_counter() > deadline:
                        raise DetectionUnavailable("detection ran over its time budget")
        except DetectionUnavailable:
            raise
        except Exception as exc:
            raise DetectionUnavailable(f"{type(exc).__name__} in detection") from exc
        if len(findings) < 2:
            return findings
        return _resolve_overlaps(findings)

    def _masked(self, text: str, findings: list[Finding], counts: Counter[str]) -> str:
        pieces: list[str] = []
        cursor = 0
        for finding in findings:
            pieces.append(text[cursor:finding.start])
            pieces.append(self._by_kind[finding.kind].mask(text[finding.start:finding.end]))
            counts[finding.kind] += 1
            cursor = finding.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def _redact_json_value(self, value: Any, key: str | None, counts: Counter[str], deadline: float) -> Any:
        if isinstance(value, str):
            findings = self._find_remembered(value, key, deadline)
            return self._masked(value, findings, counts) if findings else value
        if isinstance(value, dict):
            # Keys are text the client chose too ({"jane@acme.com": {...}}): masked like values, numbered if
            # two of them mask alike, so no value is lost.
            out: dict[str, Any] = {}
            for k, item in value.items():
                key_findings = self._find_remembered(k, None, deadline)
                safe_key = self._masked(k, key_findings, counts) if key_findings else k
                if safe_key != k:
                    base, number = safe_key, 2
                    while safe_key in out or safe_key in value:
                        safe_key, number = f"{base}#{number}", number + 1
                out[safe_key] = self._redact_json_value(item, k, counts, deadline)
            return out
        if isinstance(value, list):
            # Items of a list inherit its key: {"passwords": [...]} or {"phones": [...]}.
            return [self._redact_json_value(item, key, counts, deadline) for item in value]
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _SMALLEST_NUMERIC_ENTITY:
            # {"card": 4111111111111111}: a number can be an identifier too; masked, it becomes a string.
            digits = str(value)
            findings = self._find(digits, key, deadline)
            return self._masked(digits, findings, counts) if findings else value
        return value


ALL_KINDS: frozenset[str] = frozenset(REGISTRY) | MODEL_KINDS
# Indonesian identity numbers are masked whatever the posture says (a legal requirement, not a choice).
ALWAYS_ON: frozenset[str] = frozenset({"ID_NIK", "ID_NPWP"}) & ALL_KINDS


def build_engine(enabled_kinds: Iterable[str] | None = None, ner_model: str | None = DEFAULT_NER_MODEL,
                 field_time_budget_ms: float = 250.0) -> PiiEngine:
    """An engine for ``enabled_kinds`` (every kind when None) plus the always-on kinds.

    PERSON is found with the name gazetteer and, where that leaves doubt, the spaCy pipeline ``ner_model``
    (None: the gazetteer and context words alone). A configured model or a gazetteer that cannot be loaded
    is an error at build time, so a misconfigured redactor stops at start-up rather than at the first name.
    """
    kinds = set(ALL_KINDS if enabled_kinds is None else enabled_kinds)
    unknown = kinds - ALL_KINDS
    if unknown:
        raise ValueError(f"no recognizer is registered for {sorted(unknown)}; known kinds: {sorted(ALL_KINDS)}")
    kinds |= ALWAYS_ON
    recognizers: list[Recognizer] = [REGISTRY[kind]() for kind in sorted(kinds - MODEL_KINDS)]
    # Loaded (once per process) even when this posture leaves PERSON out: a configured model that is
    # missing must stop the redactor at start-up, not when the first tenant asks for names.
    nlp = load_ner_model(ner_model) if ner_model else None
    if "PERSON" in kinds:
        try:
            person = PersonRecognizer(nlp)
        except GazetteerUnavailable as exc:
            raise ValueError(f"PERSON needs the name gazetteer: {exc}") from None
        person.warm_up()
        recognizers.append(person)
    CONTEXT_WORDS.warm_up()
    return PiiEngine(recognizers, field_time_budget_ms)
