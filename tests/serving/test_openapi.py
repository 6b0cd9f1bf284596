"""Schemathesis, driven by the gateway's own OpenAPI spec, finds no 5xx (real Triton, synced)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from secml.settings import Settings
from serving.app import app

from .conftest import api_headers

# The spec comes from the app object; the calls go to the live gateway process.
schema = schemathesis.openapi.from_dict(app.openapi())


@pytest.mark.integration
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case, synced: Settings, gateway_server: Settings):
    """Any generated request gets a non-5xx answer from the gateway with models synced."""
    case.call_and_validate(
        base_url=gateway_server.gateway_url,
        headers=api_headers(gateway_server),
        checks=[not_a_server_error],
    )
