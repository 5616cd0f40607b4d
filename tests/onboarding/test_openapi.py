"""OpenAPI: with drf-spectacular (the ``openapi`` extra) the onboarding
endpoints document their real request and response shapes; without it the
package works the same and serves no schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.urls import NoReverseMatch, reverse

from .conftest import client_for

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and a single-item ``allOf``, how a described enum is written)."""
    while "$ref" in node or len(node.get("allOf", ())) == 1:
        if "allOf" in node:
            node = node["allOf"][0]
            continue
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def body_schema(schema: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    return resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])


def response_schema(schema: dict[str, Any], operation: dict[str, Any], status: str) -> Any:
    return resolve(schema, operation["responses"][status]["content"]["application/json"]["schema"])


def enum_of(schema: dict[str, Any], prop: dict[str, Any]) -> list[str]:
    return resolve(schema, prop)["enum"]


@pytest.fixture(scope="module")
def schema(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = client_for(None).get(
            reverse("escrow_connect:openapi-schema"), {"format": "json"}
        )
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_package_schema_lists_the_onboarding_endpoints(schema):
    paths = schema["paths"]

    assert set(paths["/escrow/stripe/onboarding-link/"]) == {"post"}
    assert set(paths["/escrow/stripe/account-status/"]) == {"get"}
    assert set(paths["/escrow/stripe/dashboard-link/"]) == {"get"}
    assert set(paths["/escrow/stripe/account-session/"]) == {"post"}
    assert all(path.startswith("/escrow/") for path in paths)


def test_onboarding_link_shapes(schema):
    operation = schema["paths"]["/escrow/stripe/onboarding-link/"]["post"]

    request = body_schema(schema, operation)
    assert set(request["properties"]) == {"account_type", "organization_id"}
    assert request["required"] == ["account_type"]
    assert enum_of(schema, request["properties"]["account_type"]) == ["individual", "company"]
    answer = response_schema(schema, operation, "200")
    assert set(answer["properties"]) == {"url", "expires_at"}
    assert answer["properties"]["expires_at"]["format"] == "date-time"
    assert answer["properties"]["url"]["format"] == "uri"
    for status in ("400", "404", "409", "503"):
        error = response_schema(schema, operation, status)
        assert set(resolve(schema, error["properties"]["error"])["properties"]) >= {
            "code",
            "message",
        }


def test_account_status_shapes(schema):
    operation = schema["paths"]["/escrow/stripe/account-status/"]["get"]

    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"organization_id", "refresh"}
    assert parameters["refresh"]["schema"]["type"] == "boolean"
    answer = response_schema(schema, operation, "200")
    properties = answer["properties"]
    assert set(properties) == {
        "account_id",
        "status",
        "is_verified",
        "can_transfer",
        "charges_enabled",
        "payouts_enabled",
        "details_submitted",
        "disabled_reason",
        "requirements",
        "capabilities",
    }
    assert enum_of(schema, properties["status"]) == [
        "pending_verification",
        "verified",
        "restricted",
        "deauthorized",
    ]
    requirements = resolve(schema, properties["requirements"])["properties"]
    assert set(requirements) == {"currently_due", "eventually_due", "past_due"}
    assert requirements["past_due"]["items"]["type"] == "string"
    assert set(resolve(schema, properties["capabilities"])["properties"]) == {
        "transfers",
        "card_payments",
    }
    assert properties["disabled_reason"]["nullable"] is True
    assert "404" in operation["responses"]


def test_dashboard_link_and_account_session_shapes(schema):
    dashboard = schema["paths"]["/escrow/stripe/dashboard-link/"]["get"]
    session = schema["paths"]["/escrow/stripe/account-session/"]["post"]

    assert [p["name"] for p in dashboard["parameters"]] == ["organization_id"]
    assert set(response_schema(schema, dashboard, "200")["properties"]) == {"url"}
    body = body_schema(schema, session)
    assert set(body["properties"]) == {"organization_id", "account_type", "components"}
    assert body["properties"]["components"]["type"] == "array"
    assert body["properties"]["components"]["items"]["type"] == "string"
    assert body["properties"]["components"]["minItems"] == 1
    assert "400" in session["responses"]
    assert set(response_schema(schema, session, "200")["properties"]) == {
        "client_secret",
        "expires_at",
    }


def test_a_hosts_own_spectacular_view_includes_the_endpoints(settings):
    # What a host that adds SpectacularAPIView to its URLconf configures.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    }
    from drf_spectacular.generators import SchemaGenerator

    generated = SchemaGenerator().get_schema(request=None, public=True)

    operation = generated["paths"]["/escrow/stripe/onboarding-link/"]["post"]
    assert set(body_schema(generated, operation)["properties"]) == {
        "account_type",
        "organization_id",
    }


def test_without_drf_spectacular_the_package_works_and_serves_no_schema():
    script = textwrap.dedent(
        """
        import sys

        class NoSpectacular:
            def find_spec(self, name, path=None, target=None):
                if name == "drf_spectacular" or name.startswith("drf_spectacular."):
                    raise ImportError("drf-spectacular is not installed")
                return None

        sys.meta_path.insert(0, NoSpectacular())

        import django
        django.setup()
        from django.urls import NoReverseMatch, reverse
        from rest_framework.test import APIRequestFactory
        from django_escrow_connect.api import onboarding, schema

        assert schema.SPECTACULAR_AVAILABLE is False
        assert "drf_spectacular" not in sys.modules
        try:
            reverse("escrow_connect:openapi-schema")
        except NoReverseMatch:
            pass
        else:
            raise AssertionError("schema URL served without drf-spectacular")
        path = reverse("escrow_connect:stripe-onboarding-link")
        request = APIRequestFactory().post(path, {"account_type": "individual"}, format="json")
        response = onboarding.OnboardingLinkView.as_view()(request)
        assert response.status_code == 403, response.status_code
        assert response.data["error"]["code"] == "not_authenticated"
        print("ok")
        """
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        "PYTHONPATH": str(ROOT),
    }
    from django.conf import settings

    env["DJANGO_SETTINGS_MODULE"] = settings.SETTINGS_MODULE
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_schema_url_exists_with_drf_spectacular():
    try:
        reverse("escrow_connect:openapi-schema")
    except NoReverseMatch:  # pragma: no cover - drf-spectacular is a test dependency
        pytest.fail("drf-spectacular is installed: the schema URL should exist")
