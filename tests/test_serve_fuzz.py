"""Fuzz ``dldl serve``'s JSON API against its own OpenAPI schema (schemathesis, in-process over ASGI).

Bounded: at most 40 generated requests per operation and no per-example deadline. The checks: no 5xx,
every status code documented, every response body valid against the schema for its status code.
"""

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (the dev extra) is not installed")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture(scope="module")
def api_schema():
    import dldl
    from dldl.serve import create_app

    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(max_upload_bytes=100_000))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
