"""The OpenAPI document names and tags every operation and describes the status response."""

from __future__ import annotations

from engine.http.openapi import build


def test_every_operation_has_a_unique_operation_id_and_a_declared_tag() -> None:
    """Each operation carries an operationId (unique across the document) and a tag listed at the top."""
    doc = build()
    declared = {t["name"] for t in doc["tags"]}
    ids = [op["operationId"] for methods in doc["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
    for methods in doc["paths"].values():
        for op in methods.values():
            assert op["tags"] and set(op["tags"]) <= declared


def test_the_status_schema_describes_services_sites_and_signals() -> None:
    """/v1/status answers a Status whose services hold sites holding signals, each a named schema."""
    doc = build()
    schemas = doc["components"]["schemas"]
    ok = doc["paths"]["/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Status"}
    assert schemas["Status"]["properties"]["services"]["additionalProperties"]["$ref"].endswith("/ServiceStatus")
    assert schemas["ServiceStatus"]["properties"]["sites"]["additionalProperties"]["$ref"].endswith("/SiteStatus")
    assert schemas["SiteStatus"]["properties"]["signals"]["items"]["$ref"].endswith("/SignalStatus")
