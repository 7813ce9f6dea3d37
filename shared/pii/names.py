"""The name gazetteer: first and last names ranked by how common they are, from the ``names-dataset`` package.

names-dataset (Apache-2.0) ships the first and last names of 106 countries with a popularity rank per
country, as two gzipped pickles of about 25 and 30 MB. Unpickled they take close to 2 GB, far more than a
redactor may hold, so they are read once in a short-lived child process that keeps only the names ranked
within ``MAX_RANK`` in the countries this pipeline serves and prints them; the result (a few tens of MB in
memory) is cached per user in the temporary directory, so later processes start in well under a second.

Nothing here decides what a name is: ``recognizers/person.py`` does, from these ranks, the capitalisation
and the context around a word, and the spaCy model where those leave doubt.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import orjson

PACKAGE = "names-dataset"
# The countries whose people and colleagues write to Claude Code in the locales we support (English in the
# US, UK, India, Australia, Singapore; German, French, Spanish, Dutch, Indonesian, Portuguese in Brazil) and
# their neighbours that share the same names.
COUNTRIES = (
    "US", "GB", "IE", "CA", "AU", "NZ", "IN", "SG", "MY", "ID", "DE", "AT", "CH", "FR", "BE", "LU", "ES", "MX",
    "AR", "CO", "NL", "BR", "PT", "IT", "PH",
)
MAX_RANK = 20_000


class GazetteerUnavailable(RuntimeError):
    """names-dataset is not installed or its files cannot be read."""


@dataclass(frozen=True)
class Gazetteer:
    """Best rank (1 = most common) of each first and last name, title-cased as the data set has them."""

    first: dict[str, int]
    last: dict[str, int]

    def first_rank(self, word: str) -> int | None:
        return _rank(self.first, word)

    def last_rank(self, word: str) -> int | None:
        return _rank(self.last, word)


def _rank(table: dict[str, int], word: str) -> int | None:
    rank = table.get(word)
    if rank is None:
        rank = table.get(word.title())  # the data set writes "Mccarthy"
    if rank is None and "-" in word:
        # "Jean-Pierre", "Edwards-Woodward": a double name ranks as its best-known part.
        parts = [_rank(table, part) for part in word.split("-") if part]
        known = [p for p in parts if p is not None]
        rank = min(known) if known else None
    return rank


def _data_file(kind: str) -> Path:
    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise GazetteerUnavailable(f"the {PACKAGE} package is not installed") from None
    path = Path(str(distribution.locate_file(f"names_dataset/v3/{kind}_names.pkl.gz")))
    if not path.is_file():
        raise GazetteerUnavailable(f"{PACKAGE} has no {kind}_names.pkl.gz")
    return path


def _extract(kind: str) -> dict[str, int]:
    """Runs in the child process: the names ranked within MAX_RANK in any of COUNTRIES."""
    with gzip.open(_data_file(kind), "rb") as handle:
        # The package's own data file, located through its installed distribution (not user input).
        table = pickle.load(handle)  # noqa: S301
    kept: dict[str, int] = {}
    for name, info in table.items():
        ranks = info.get("rank") or {}
        best = min((ranks[c] for c in COUNTRIES if c in ranks), default=None)
        if best is not None and best <= MAX_RANK and " " not in name:
            kept[name] = int(best)
    return kept


def _cache_file() -> Path:
    version = metadata.version(PACKAGE)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"pii-names-{version}-{MAX_RANK}-{len(COUNTRIES)}-{uid}.json"


def _read_cache(path: Path) -> Gazetteer | None:
    try:
        info = path.stat()
        # Only a file this user wrote and nobody else can change is trusted.
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            return None
        # orjson: the file is ~6 MB, read at every start; the json module takes two to three times as long.
        data = orjson.loads(path.read_bytes())
        return Gazetteer(dict(data["first"]), dict(data["last"]))
    except (OSError, ValueError, KeyError, TypeError):  # orjson.JSONDecodeError is a ValueError
        return None


def installed_file() -> Path:
    """Where an image build puts the derived gazetteer (``python -m shared.pii.names --install``): beside the
    installed packages, as trusted as they are, and readable on a read-only root filesystem."""
    return Path(sys.prefix) / "share" / f"pii-names-{metadata.version(PACKAGE)}-{MAX_RANK}-{len(COUNTRIES)}.json"


@lru_cache(maxsize=1)
def load_gazetteer() -> Gazetteer:
    _data_file("first")  # fails fast, with a clear message, when the package is missing
    installed = installed_file()
    if installed.is_file():
        data = orjson.loads(installed.read_bytes())
        return Gazetteer(dict(data["first"]), dict(data["last"]))
    cache = _cache_file()
    cached = _read_cache(cache)
    if cached is not None:
        return cached
    result = subprocess.run(
        [sys.executable, "-m", "shared.pii.names"], capture_output=True, check=False, timeout=300
    )
    if result.returncode != 0:
        raise GazetteerUnavailable(f"reading {PACKAGE} failed: {result.stderr.decode(errors='replace')[-300:]}")
    data = json.loads(result.stdout)
    try:
        fd, partial = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".part")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(result.stdout.decode())
        os.chmod(partial, 0o644)
        os.replace(partial, cache)
    except OSError:
        pass  # no cache: the next process reads the package again
    return Gazetteer(dict(data["first"]), dict(data["last"]))


def main() -> None:
    if sys.argv[1:] == ["--install"]:
        target = installed_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8") as out:
            json.dump({"first": _extract("first"), "last": _extract("last")}, out, ensure_ascii=False)
        print(target)
        return
    json.dump({"first": _extract("first"), "last": _extract("last")}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
