"""schemathesis against the app's own OpenAPI document: no server errors, no response outside the document."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.main import create_app
from tests.conftest import make_settings

# Built at import, as schemathesis' pytest integration wants; building the app loads no model (that happens on
# first use or in the lifespan), and the weights folder need not exist.
app = create_app(make_settings(Path(tempfile.gettempdir()) / "cortexlens-contract"))
# The examples and fuzzing phases; not the coverage phase, which builds its cases while pytest collects, where
# hypothesis describes schemathesis' filter lambdas with ast.parse of a 5,000-line module, which CPython 3.11.7
# fails now and then ("SystemError: AST constructor recursion depth mismatch", fixed in later CPythons).
config = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@pytest.mark.timeout(240)
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_keeps_its_contract(case):
    response = case.call()
    # Every default check (no server error; status code, content type, headers and body as documented;
    # schema-valid requests accepted), with two exceptions that are the design, not a failure:
    excluded = []
    if case.operation.method.upper() in ("POST", "PUT", "PATCH"):
        # A request body can be schema-valid and still unusable: any bytes are a valid upload but only an image is
        # analysed; a spatial frequency may be too fine to draw for its unit. JSON Schema cannot say either, so
        # bodies are not held to "schema-valid means accepted"; the refusals are tested where they are made
        # (test_hostile_uploads for uploads).
        excluded.append(positive_data_acceptance)
    retry_after = response.headers.get("retry-after") or [""]  # schemathesis keeps each header as a list
    if response.status_code == 503 and retry_after[0].isdigit():
        excluded.append(not_a_server_error)  # a full queue, said so with Retry-After (503 must be documented)
    case.validate_response(response, excluded_checks=excluded)


def test_validation_errors_are_documented_as_sent(client):
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    channel = document["paths"]["/api/v1/analyses/{analysis_id}/layers/{layer}/channels/{channel}.png"]["get"]
    assert channel["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorPublic"
    }
    response = client.get("/api/v1/analyses/x/layers/y/channels/not-a-number.png")
    assert response.status_code == 422 and set(response.json()) == {"detail"}


def test_405_names_every_method_the_document_gives_the_path(client):
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if "patch" in operations:
            continue
        response = client.patch(re.sub(r"\{[^}]+\}", "1", path))
        assert response.status_code == 405, path
        documented = sorted(method.upper() for method in operations)
        assert response.headers["allow"] == ", ".join(documented), path
        assert response.json() == {"detail": f"PATCH is not allowed here; use {' or '.join(documented)}"}
