from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from tests.unit.pii.conftest import found

POSITIVES = [
    ("ssh deploy@10.0.0.1 -p 2222", "10.0.0.1"),
    ("connect ECONNREFUSED 192.168.1.254:5432", "192.168.1.254"),
    ("1.2.3.4", "1.2.3.4"),  # a bare valid dotted quad is an address, whatever it is used for
    ("from 8.8.8.8.", "8.8.8.8"),
    ("ping fe80::1", "fe80::1"),
    ("2001:db8::8a2e:370:7334 is up", "2001:db8::8a2e:370:7334"),
    ("mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128"),
    ("https://[2001:db8::1]:443/", "2001:db8::1"),
    ("27fc:a832:436c:6d2a:9c47:92db:4aa7:1c38", "27fc:a832:436c:6d2a:9c47:92db:4aa7:1c38"),
    # Uncompressed, among the colons of JSON and clock times: found by its run of six colons or more.
    ('{"at": "16:11:51", "host": "27fc:a832:436c:6d2a:9c47:92db:4aa7:1c38"}', "27fc:a832:436c:6d2a:9c47:92db:4aa7:1c38"),
    ("peer=0:0:0:0:0:ffff:192.0.2.128 at 16:11:51", "0:0:0:0:0:ffff:192.0.2.128"),
]
NEGATIVES = [
    "claude-code 2.1.332",
    "bump to v1.2.3",
    "1.2.3.4.5",
    "999.1.1.1",
    "256.1.1.1",
    "01.02.03.04",  # leading zeros
    "at 16:11:51",
    "mac 00:1A:2B:3C:4D:5E",
    "std::vector<int> v;",
    "oid 1.3.6.1.4.1.311",
    "version v10.0.0.1",
    "a::b is a Rust path",
    # Colons enough for eight groups, never six in one run of hex digits: JSON keys, clock times, ports.
    '{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8}',
    "at 16:11:51, 17:22:33, 18:00:01 and localhost:8080",
    "dead:beef:cafe:f00d:1234:abcd (five colons in a run) at 16:11:51 on 10:00",
    # Four-part versions, in prose and in requirements.txt / package.json shapes.
    "upgrade to v10.2.0.1 now",
    "version 4.3.2.1",
    "Version: 10.2.0.1",
    "numpy==1.2.3.4",
    "django>=4.2.0.1",
    '"lodash": "^4.17.21.1"',
    '"version": "4.3.2.1"',
    "release 2.0.0.1 ships today",
]


@pytest.mark.parametrize(("text", "address"), POSITIVES)
def test_ip_is_found(engine: PiiEngine, text: str, address: str) -> None:
    assert ("IP_ADDRESS", address) in found(engine, text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_an_ip(engine: PiiEngine, text: str) -> None:
    assert all(kind != "IP_ADDRESS" for kind, _ in found(engine, text))
