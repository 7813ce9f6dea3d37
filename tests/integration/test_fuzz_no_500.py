"""Hostile HTTP input never gets a 500: the receiver and the reporter, as real processes, fuzzed (Hypothesis).

Licence tokens (including payloads nested thousands deep), Basic credentials, query parameters (dates at
the ends of the calendar, integers past int64), path ids and bodies (random bytes, JSON, gzip, protobuf).
Every answer is below 500 and carries the JSON (or OTLP) error body, and neither service writes a traceback.

The seed is fixed so `make test` is repeatable; FUZZ_EXAMPLES=2000 (and FUZZ_SEED=...) runs longer on demand.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from deploy.local.infra import free_port
from shared.db.pool import connect
from shared.reporting_tokens import AUDITOR, issue_token
from tests.conftest import Infra, create_database, make_topics
from tests.e2e.harness import Pipeline
from tests.unit.receiver.payloads import log_body

FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "20261204"))
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
INT64_MAX = 2**63 - 1


@dataclass
class Services:
    pipeline: Pipeline
    receiver: httpx.Client
    reporter: httpx.Client
    good_auth: str
    reporting_auth: str

    def logs(self) -> str:
        return self.pipeline.log_of("receiver") + self.pipeline.log_of("reporter")


@pytest.fixture(scope="module")
def services(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    database_url = asyncio.run(create_database(infra.server_dsn))
    topics = asyncio.run(make_topics(infra.bootstrap))
    reporter_port = free_port()
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path_factory.mktemp("fuzz"),
                    extra_env={"REPORTER_PORT": str(reporter_port), "REPORTER_HOST": "127.0.0.1"})
    pipe.start("receiver", "reporter")
    from deploy.local.stack import wait_ready  # noqa: PLC0415

    wait_ready(f"http://127.0.0.1:{reporter_port}/readyz", 60)
    ingest = asyncio.run(pipe.licence("fuzz-org", tenant="fuzz-tenant"))
    reporting = asyncio.run(_auditor_token(database_url))
    with httpx.Client(base_url=pipe.url, timeout=30) as receiver, \
            httpx.Client(base_url=f"http://127.0.0.1:{reporter_port}", timeout=30) as reporter:
        yield Services(pipe, receiver, reporter, _basic("fuzz-org", ingest), f"Bearer {reporting}")
    pipe.stop()


async def _auditor_token(database_url: str) -> str:
    conn = await connect(database_url)
    try:
        _, token = await issue_token(conn, tenant_id="fuzz-tenant", org_id="fuzz-org", role=AUDITOR,
                                     user_email=None, expires_at=None, created_by="fuzz")
    finally:
        await conn.close()
    return token


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '{"a":' * depth + "1" + "}" * depth if opener == "{" else opener * depth + closer * depth
    return inner.encode()


# Licence tokens: well-formed shapes with hostile payloads, and plain garbage.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
payloads = st.one_of(
    # Up to ~1,500 levels fit in the longest token accepted; deeper ones are refused for their length.
    st.builds(_nested, st.integers(900, 1500) | st.integers(1, 5000), st.sampled_from(["[", "{"])),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({
        "v": st.integers(-2, 3), "lid": st.text(max_size=10), "org": st.just("fuzz-org"), "tenant": st.text(max_size=10),
        "ent": st.lists(st.text(max_size=10), max_size=3) | st.integers(),
        "iat": st.integers(-(10**30), 10**30) | st.text(max_size=5),
        "exp": st.integers(-(10**30), 10**30) | st.floats(),
        "kid": st.text(max_size=40),
    }).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
)
tokens = st.one_of(
    st.builds(lambda p, sig: f"lic1.{_b64url(p)}.{_b64url(sig)}", payloads, st.binary(max_size=80)),
    st.text(max_size=300),
)
authorizations = st.one_of(
    st.builds(_basic, st.sampled_from(["fuzz-org", "", "other"]) | st.text(max_size=20),
              tokens),
    st.builds(lambda raw: "Basic " + base64.b64encode(raw).decode(), st.binary(max_size=200)),
    st.builds(lambda token: f"Bearer {token}", tokens | st.builds(
        lambda a, b: f"rpt1.{a}.{b}", st.text(max_size=20), st.text(max_size=60))),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
).map(str.strip)


def _send(client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response | None:
    """None where the HTTP client itself refuses the request (an illegal header or URL): nothing was sent."""
    try:
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]
    except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
        return None


def _assert_clean(response: httpx.Response, services: Services, *, otlp: bool) -> None:
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text[:500])
    if response.status_code >= 400 and response.status_code != 503:
        kind = response.headers.get("content-type", "")
        if otlp and kind.startswith("application/x-protobuf"):
            status_pb2.Status.FromString(response.content)  # a well-formed OTLP error body
        elif "json" in kind:
            assert isinstance(response.json(), dict)
        else:
            assert kind.startswith("text/html"), kind  # the portal's error page


@FUZZ
@seed(FUZZ_SEED)
@given(authorization=authorizations)
def test_hostile_licence_tokens_get_4xx_from_the_receiver(services: Services, authorization: str) -> None:
    response = _send(services.receiver, "POST", "/v1/logs", content=log_body(1), headers={
        "Authorization": authorization, "Content-Type": "application/x-protobuf"})
    if response is None:
        return
    assert response.status_code in (400, 401, 403), (response.status_code, response.text[:300])
    _assert_clean(response, services, otlp=True)


bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps({"resourceLogs": v}).encode()),
    st.builds(_nested, st.integers(1, 20_000), st.sampled_from(["[", "{"])),
    st.builds(lambda n: json.dumps({"resourceLogs": [{}] * n}).encode(), st.integers(0, 50_000)),
    st.builds(lambda n: json.dumps({"resourceLogs": [{"scopeLogs": [{}] * n}]}).encode(), st.integers(0, 50_000)),
    st.builds(lambda body, cut: body[:cut], st.just(log_body(3)), st.integers(0, 400)),
)


@FUZZ
@seed(FUZZ_SEED)
@given(
    path=st.sampled_from(["/v1/logs", "/v1/metrics", "/v1/traces", "/v1/logs/", "/v2/logs", "/"]),
    body=bodies,
    content_type=st.sampled_from(["application/x-protobuf", "application/json", "application/json; charset=utf-8",
                                  "text/plain", ""]),
    compress=st.booleans(),
    encoding=st.sampled_from([None, "gzip", "identity", "br", "gzip, gzip"]),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
)
def test_hostile_bodies_get_no_500_from_the_receiver(
    services: Services, path: str, body: bytes, content_type: str, compress: bool, encoding: str | None,
    method: str,
) -> None:
    headers = {"Authorization": services.good_auth, "Content-Type": content_type}
    if compress:
        body, encoding = gzip.compress(body), "gzip"
    if encoding:
        headers["Content-Encoding"] = encoding
    response = _send(services.receiver, method, path, content=body, headers=headers)
    if response is None:
        return
    _assert_clean(response, services, otlp=True)


query_values = st.one_of(
    st.sampled_from(["0001-01-05", "0001-01-01", "9999-12-31", "9999-12-31T23:59:59", "0001-01-01T00:00:00+14:00",
                     "2026-01-01", "2026-13-01", "-1", "0", str(INT64_MAX), str(INT64_MAX + 1), str(10**40), "1e9",
                     "NaN", "\x00", "%00", "user", "day", "model"]),
    st.integers(-(10**25), 10**25).map(str),
    st.text(max_size=40),
    st.builds(_b64url, payloads),
)
reporter_paths = st.one_of(
    st.sampled_from(["/api/v1/usage", "/api/v1/audit/events", "/api/v1/sessions", "/api/v1/audit/verify",
                     "/api/v1/signing-keys", "/portal/", "/portal/events", "/portal/sessions", "/portal/usage",
                     "/portal/chain"]),
    st.builds(lambda n: f"/api/v1/audit/records/{n}/proof",
              st.integers(-5, 10**30) | st.sampled_from([INT64_MAX, INT64_MAX + 1, 2**64])),
    st.builds(lambda s: f"/api/v1/sessions/{s}", st.text(min_size=1, max_size=600)),
    st.builds(lambda s: f"/portal/sessions/{s}", st.text(min_size=1, max_size=100)),
)


@FUZZ
@seed(FUZZ_SEED)
@given(
    path=reporter_paths,
    query=st.dictionaries(st.sampled_from(["since", "until", "limit", "offset", "cursor", "group_by", "plane",
                                           "event_type", "user", "session", "decision", "tool"]),
                          query_values, max_size=4),
    authorization=st.one_of(st.none(), authorizations),
)
def test_hostile_requests_get_no_500_from_the_reporter(
    services: Services, path: str, query: dict[str, str], authorization: str | None
) -> None:
    headers = {"Authorization": authorization or services.reporting_auth}
    response = _send(services.reporter, "GET", path, params=query, headers=headers)
    if response is None:
        return
    _assert_clean(response, services, otlp=False)


def test_the_logs_hold_no_traceback(services: Services) -> None:
    """Runs after the fuzzers (same module, same processes): nothing they sent made either service crash."""
    logs = services.logs()
    assert "Traceback" not in logs, logs[logs.find("Traceback") - 500:][:3000]


def test_the_issue_cases_get_their_4xx(services: Services) -> None:
    for depth, opener in ((3000, "["), (1200, "["), (1200, "{")):  # 1,200 deep fits in the length limit
        deep = f"lic1.{_b64url(_nested(depth, opener))}.{_b64url(b'x' * 64)}"
        response = services.reporter.get("/api/v1/usage", headers={"Authorization": _basic("fuzz-org", deep)})
        assert response.status_code == 401 and response.json()["reason"]
        response = services.receiver.post("/v1/logs", content=log_body(1), headers={
            "Authorization": _basic("fuzz-org", deep), "Content-Type": "application/x-protobuf"})
        assert response.status_code == 401
        status_pb2.Status.FromString(response.content)
    response = services.reporter.get("/api/v1/usage", params={"until": "0001-01-05"},
                                     headers={"Authorization": services.reporting_auth})
    assert response.status_code == 400 and "until" in response.json()["error"]
    response = services.reporter.get(f"/api/v1/audit/records/{INT64_MAX + 1}/proof",
                                     headers={"Authorization": services.reporting_auth})
    assert response.status_code == 404 and response.json()["error"]
    assert "Traceback" not in services.logs()

