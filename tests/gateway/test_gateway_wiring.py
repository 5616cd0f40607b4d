"""get_gateway(), the PaymentGateway protocol, and how settings reach the StripeClient."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_escrow_connect import conf
from django_escrow_connect.gateway import PaymentGateway, get_gateway
from django_escrow_connect.gateway.stripe_gateway import StripeGateway

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_JSON = {"id": "acct_1QzR8tQm5HwJ3uVe", "object": "account", "capabilities": {}}


class FakeGateway:
    """Stands in for a simulated gateway in the GATEWAY setting."""


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_stripe_gateway_implements_every_protocol_method_with_the_same_signature():
    protocol = _public_methods(PaymentGateway)
    implementation = _public_methods(StripeGateway)

    assert set(protocol) <= set(implementation)
    for name, signature in protocol.items():
        assert str(implementation[name]) == str(signature), name
    assert isinstance(StripeGateway(), PaymentGateway)


def test_get_gateway_returns_one_configured_instance_until_settings_change(settings):
    first = get_gateway()
    assert isinstance(first, StripeGateway)
    assert get_gateway() is first

    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "STRIPE_TIMEOUT": 12}
    second = get_gateway()
    assert isinstance(second, StripeGateway)
    assert second is not first


def test_get_gateway_builds_the_class_named_by_the_setting(settings):
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": "tests.gateway.test_gateway_wiring.FakeGateway",
    }
    assert isinstance(get_gateway(), FakeGateway)


def test_only_the_stripe_gateway_module_imports_stripe():
    code = (
        "import sys, django\n"
        "from django.conf import settings\n"
        "settings.configure(ESCROW_CONNECT={'GATEWAY': 'types.SimpleNamespace'})\n"
        "import django_escrow_connect.exceptions\n"
        "import django_escrow_connect.gateway as g\n"
        "import django_escrow_connect.gateway.base, django_escrow_connect.gateway.types\n"
        "assert 'stripe' not in sys.modules, 'stripe imported too early'\n"
        "g.get_gateway()\n"
        "assert 'stripe' not in sys.modules, 'stripe imported by get_gateway'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_key_names_the_setting(settings):
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "STRIPE_SECRET_KEY": ""}
    with pytest.raises(ImproperlyConfigured, match="STRIPE_SECRET_KEY"):
        StripeGateway().retrieve_account("acct_1QzR8tQm5HwJ3uVe")


# --- settings reach the wire (a local HTTP server stands in for Stripe) -------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "headers": dict(self.headers)})
        body = json.dumps(ACCOUNT_JSON).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Request-Id", "req_local")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_stripe() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def test_settings_choose_base_address_key_and_pinned_api_version(local_stripe, settings):
    base, seen = local_stripe
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "STRIPE_SECRET_KEY": "sk_test_from_settings",
        "STRIPE_API_BASE": base + "/",
    }

    account = StripeGateway().retrieve_account("acct_1QzR8tQm5HwJ3uVe")

    assert account.id == "acct_1QzR8tQm5HwJ3uVe"
    (request,) = seen
    assert request["path"] == "/v1/accounts/acct_1QzR8tQm5HwJ3uVe"
    assert request["headers"]["Stripe-Version"] == conf.STRIPE_API_VERSION == "2026-10-28.endive"
    assert request["headers"]["Authorization"] == "Bearer sk_test_from_settings"


def test_constructor_arguments_override_settings(local_stripe):
    base, seen = local_stripe
    gateway = StripeGateway(api_key="sk_test_from_argument", api_base=base)

    gateway.retrieve_account("acct_1QzR8tQm5HwJ3uVe")

    assert seen[0]["headers"]["Authorization"] == "Bearer sk_test_from_argument"


def test_calls_for_a_connected_account_send_stripe_account(local_stripe):
    base, seen = local_stripe
    gateway = StripeGateway(api_key="sk_test_local", api_base=base)

    gateway.retrieve_event("evt_1QzW3nQm5HwJ3uVeF8a2LpTs", stripe_account="acct_1QzR8tQm5HwJ3uVe")

    assert seen[0]["headers"]["Stripe-Account"] == "acct_1QzR8tQm5HwJ3uVe"


def test_the_api_version_sent_is_the_one_the_package_pins(local_stripe, monkeypatch):
    base, seen = local_stripe
    monkeypatch.setattr(conf, "STRIPE_API_VERSION", "2026-10-28.endive-pin-probe")

    StripeGateway(api_key="sk_test_local", api_base=base).retrieve_account("acct_1QzR8tQm5HwJ3uVe")

    assert seen[0]["headers"]["Stripe-Version"] == "2026-10-28.endive-pin-probe"
