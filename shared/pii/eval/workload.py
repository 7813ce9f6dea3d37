"""Realistic content for speed measurements: Claude Code content fields with PII sprinkled in.

Each text is one labelled corpus sample (a prompt, a Bash command, a JSON tool input, an API error) padded
with ordinary content to the requested size: prose in the sample's locale, log lines and code with their
versions, timestamps, hashes and ids. The attribute it belongs to follows the sample's shape, so JSON tool
input goes where the CLI puts it (``tool_input``, ``tool_parameters``) and takes the engine's JSON path.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from shared.pii.eval.corpus import CorpusBuilder, Generator, Sample

# Content attribute of each event type, as the CLI sends it.
ATTRIBUTE_OF_EVENT = {
    "user_prompt": "prompt",
    "assistant_response": "response",
    "tool_result": "tool_input",
    "tool_decision": "tool_parameters",
    "api_error": "error",
}
JSON_ATTRIBUTES = frozenset({"tool_input", "tool_parameters"})


@dataclass(frozen=True)
class Content:
    attribute: str
    text: str


def _filler_line(gen: Generator) -> str:
    choice = gen.rng.randrange(6)
    number = gen.rng.randrange(1, 99999)
    if choice == 0:
        return f"{gen.timestamp()} INFO  worker[{number}] processed {gen.order_id()} in {gen.quantity()}"
    if choice == 1:
        return f"  at {gen.word()}.{gen.word()} ({gen.fake.file_path(depth=3)}:{number % 900}:{number % 80})"
    if choice == 2:
        return f"def {gen.word()}_{gen.word()}(self, {gen.word()}: int = {number % 100}) -> None:  # {gen.version()}"
    if choice == 3:
        return f"commit {gen.fake.sha1()} bumps {gen.word()} to {gen.version()}"
    if choice == 4:
        # People are named in content too: person-name detection pays its cost on these.
        return f"Thanks {gen.fake.name()}, {gen.fake.paragraph(nb_sentences=2)}"
    return str(gen.fake.paragraph(nb_sentences=gen.rng.randrange(2, 5)))


class Workload:
    def __init__(self, seed: int) -> None:
        self.builder = CorpusBuilder(seed)
        self.gen = self.builder.gen
        self.rng = random.Random(seed + 1)

    def _sample(self) -> Sample:
        while True:
            sample = next(self.builder.samples(1))
            if sample.shape != "negative" or self.rng.random() < 0.3:
                return sample

    def _padded(self, text: str, size: int) -> str:
        lines = [text]
        length = len(text)
        while length < size:
            line = _filler_line(self.gen)
            lines.insert(self.rng.randrange(len(lines) + 1), line)
            length += len(line) + 1
        return "\n".join(lines)[: max(size, len(text))]

    def content(self, attribute: str, size: int) -> str:
        """One text for ``attribute`` of about ``size`` characters (JSON for the tool attributes)."""
        self.gen.locale = self.gen.pick(("en_US", "en_GB", "de_DE", "fr_FR", "id_ID"))
        sample = self._sample()
        if attribute in JSON_ATTRIBUTES:
            if sample.json_text is not None:
                document = json.loads(sample.json_text)
            else:
                document = {"command": sample.fields[0].text, "description": ""}
            filler = self._padded("", max(0, size - len(json.dumps(document, ensure_ascii=False))))
            document["description" if "description" in document else "notes"] = filler.strip()
            return json.dumps(document, ensure_ascii=False)
        text = " ".join(field.text for field in sample.fields)
        return self._padded(text, size)


def realistic_texts(count: int, seed: int = 7, size: int = 1024) -> list[Content]:
    """``count`` content fields over every content attribute, the same ones for the same seed."""
    workload = Workload(seed)
    attributes = sorted(ATTRIBUTE_OF_EVENT.values())
    return [Content(attribute, workload.content(attribute, size)) for attribute in (attributes * count)[:count]]
