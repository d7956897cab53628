"""Schemathesis against the service's own OpenAPI schema: generated requests (valid and invalid,
with the write token, so writes run too) never get a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip(
    "fastapi", reason="the serve extra is not installed: pip install 'xmodal[serve]'"
)
pytest.importorskip("schemathesis", reason="schemathesis is missing (pip install -e '.[dev]')")

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from serve_toys import TOKEN, auth, build_toy_index

from xmodal.serve import create_app

pytestmark = pytest.mark.slow  # ~10 s: 8 operations x 25 generated requests

# Schemathesis needs the schema when tests are collected: the index lives as long as the module.
_TMP = tempfile.TemporaryDirectory(prefix="xmodal-schema-")
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(build_toy_index(Path(_TMP.name)), token=TOKEN)
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    response = case.call(headers=auth())
    assert response.status_code < 500, (case.method, case.path, response.text)
    case.validate_response(response, checks=[not_a_server_error], headers=auth())
