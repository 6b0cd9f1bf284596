"""Schemathesis, driven by the gateway's own OpenAPI spec, finds no 5xx (real Triton, synced)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from secml.settings import Settings

from .conftest import api_headers


@pytest.fixture
def gateway_schema(synced: Settings, gateway_server: Settings):
    """The live gateway's OpenAPI schema (models synced, so valid records reach Triton)."""
    return schemathesis.openapi.from_url(f"{gateway_server.gateway_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("gateway_schema")


@pytest.mark.integration
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case, gateway_server: Settings):
    """Any generated request, with or without the API key, gets a non-5xx answer."""
    case.call_and_validate(headers=api_headers(gateway_server), checks=[not_a_server_error])
