"""The OpenAPI document and the routes agree, and every reference in it resolves."""

from __future__ import annotations

import json
from typing import Any

from starlette.routing import Mount, Route

from services.reporter import openapi
from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared.keys import Ed25519Signer
from shared.licensing import LicenseVerifier


def _api_paths() -> set[str]:
    app = create_app(ReporterSettings(), LicenseVerifier.from_public_keys([Ed25519Signer.generate().public_key]))
    [api] = [r for r in app.routes if isinstance(r, Mount) and r.path == openapi.API_PREFIX]
    paths = set()
    for route in api.routes:
        assert isinstance(route, Route)
        path = route.path.replace(":int", "").replace(":path", "")
        paths.add(openapi.API_PREFIX + path)
    return paths


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_route_is_documented_and_every_document_path_is_routed() -> None:
    document = openapi.document("1")
    assert set(document["paths"]) == _api_paths()
    for path, item in document["paths"].items():
        assert set(item) <= {"get", "post"}, path
        for operation in item.values():
            placeholders = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert placeholders == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
            assert operation["x-roles"], path


def test_roles_in_the_document_are_the_enforced_ones() -> None:
    paths = openapi.document("1")["paths"]
    assert paths["/api/v1/audit/records/{record_id}/proof"]["get"]["x-roles"] == ["admin", "auditor"]
    assert paths["/api/v1/audit/records/{record_id}/proof"]["get"]["x-access-audited"] == "proof"
    assert paths["/api/v1/usage"]["get"]["x-roles"] == ["admin", "auditor", "analyst"]
    assert paths["/api/v1/tokens"]["post"]["x-roles"] == ["admin"]
    assert paths["/api/v1/audit/events"]["get"]["x-roles"] == ["admin", "auditor", "analyst", "developer"]


def test_references_resolve_and_the_document_is_json() -> None:
    document = openapi.document("1")
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref
    assert json.loads(json.dumps(document)) == document
    assert document["openapi"].startswith("3.1")
