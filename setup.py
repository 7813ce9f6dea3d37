"""Compiled fast paths of the signer's per-row work (everything else is in pyproject.toml).

Each extension is optional: where no C compiler is at hand the install still succeeds and the pure-Python
path runs, which is also the definition every compiled path is tested against.
"""

from setuptools import Extension, setup

# SHA-256 on the CPU's SHA extensions, included by the two modules that hash: a change to it rebuilds both.
SHA256_HEADER = ["services/signer/_sha256.h"]

NATIVE_EXTENSIONS: list[Extension] = [
    # chain_rows' per-row work for plain rows (services/signer/appender.py).
    Extension("services.signer._native_chain", ["services/signer/_native_chain.c"], depends=SHA256_HEADER,
              optional=True),
    # The signer's COPY rows in PostgreSQL's binary format (services/signer/appender.py copy_records).
    Extension("services.signer._native_copy", ["services/signer/_native_copy.c"], optional=True),
    # The signer's reading of the usual canonical message (services/signer/rows.py decode_usual_row).
    Extension("services.signer._native_rows", ["services/signer/_native_rows.c"], depends=SHA256_HEADER,
              optional=True),
]

setup(ext_modules=NATIVE_EXTENSIONS)
