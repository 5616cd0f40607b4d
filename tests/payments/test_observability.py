"""Spans and counters around money calls (``docs/observability.md``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from django_escrow_connect.exceptions import InvalidRequest
from django_escrow_connect.observability import metrics_snapshot, safe_attributes, span

REPO_ROOT = Path(__file__).resolve().parents[2]
STRIPE_ERRORS = "escrow_connect.stripe.errors"


def release(market: Any, payment: Any) -> Any:
    return market.post(market.customer, "payment-confirm", payment_id=payment.pk)


def error_count(entries: list[dict[str, Any]], **match: Any) -> int:
    return sum(e["count"] for e in entries if all(e[k] == v for k, v in match.items()))


def test_a_release_traces_the_transfer_inside_its_money_operation(market, sim_stripe, otel):
    payment = market.held_payment()
    otel.exporter.clear()

    assert release(market, payment).status_code == 200

    [operation] = otel.spans("escrow_connect.money_operation")
    [transfer] = otel.spans("stripe.create_transfer")
    assert transfer.parent.span_id == operation.context.span_id
    assert operation.attributes["money_operation.kind"] == "transfer"
    assert operation.attributes["payment.id"] == str(payment.pk)
    assert operation.attributes["money_operation.outcome"] == "succeeded"
    assert transfer.attributes["stripe.method"] == "create_transfer"
    assert transfer.attributes["stripe.idempotency_key.present"] is True
    assert transfer.attributes["stripe.destination"] == market.doer_account.stripe_account_id
    assert transfer.status.status_code.name != "ERROR"


def test_a_refused_stripe_call_is_counted_by_code_and_marks_the_spans(market, sim_stripe, otel):
    payment = market.held_payment()
    key = frozenset(
        {"method": "create_transfer", "code": "balance_insufficient", "http_status": "400"}.items()
    )
    before = otel.metric(STRIPE_ERRORS).get(key, 0)
    local_before = error_count(metrics_snapshot()["stripe_errors"], method="create_transfer")
    otel.exporter.clear()
    sim_stripe.fail_next(
        "create_transfer",
        InvalidRequest("Insufficient funds.", code="balance_insufficient", http_status=400),
    )

    release(market, payment)

    assert otel.metric(STRIPE_ERRORS)[key] == before + 1
    after = metrics_snapshot()["stripe_errors"]
    assert error_count(after, method="create_transfer") == local_before + 1
    [transfer] = otel.spans("stripe.create_transfer")
    assert transfer.status.status_code.name == "ERROR"
    assert transfer.attributes["error.code"] == "balance_insufficient"
    assert transfer.attributes["error.http_status"] == 400
    [operation] = otel.spans("escrow_connect.money_operation")
    assert operation.attributes["money_operation.outcome"] == "failed"
    assert operation.status.status_code.name == "ERROR"


def test_turned_off_no_span_is_made_but_the_process_counters_still_count(
    market, sim_stripe, otel, settings
):
    payment = market.held_payment()
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "OPENTELEMETRY": False}
    requests = error_count(metrics_snapshot()["stripe_requests"], method="create_transfer")
    otel.exporter.clear()

    assert release(market, payment).status_code == 200

    assert otel.spans() == []
    with span("anything", payment_id="x") as current:
        current.set_attributes(outcome="ok")
    assert otel.spans() == []
    after = metrics_snapshot()["stripe_requests"]
    assert error_count(after, method="create_transfer") == requests + 1


def test_no_span_carries_a_secret_or_a_payload(market, sim_stripe, otel):
    otel.exporter.clear()
    response = market.create(market.task())
    client_secret = response.json()["client_secret"]
    payment = market.pay(response.json()["payment_id"])
    release(market, payment)

    spans = otel.spans()
    assert {"stripe.create_payment_intent", "stripe.create_transfer"} <= {s.name for s in spans}
    for finished in spans:
        for name, value in finished.attributes.items():
            where = (finished.name, name)
            assert "secret" not in name, where
            assert "payload" not in name, where
            assert isinstance(value, (str, int, bool)), where
            text = str(value)
            assert client_secret not in text, where
            assert "_secret_" not in text, where
            assert not text.startswith(("sk_", "rk_", "whsec_")), where


def test_safe_attributes_drop_secrets_card_data_payloads_and_other_types():
    kept = safe_attributes(
        {
            "client_secret": "pi_1_secret_2",
            "intent": "pi_3_secret_4",
            "key": "sk_test_123",
            "webhook": "whsec_456",
            "card_number": "4242424242424242",
            "payload": '{"id": "evt_1"}',
            "event": {"id": "evt_1"},
            "long": "x" * 1000,
            "missing": None,
            "payment_intent": "pi_3",
            "attempt": 2,
            "retried": True,
        }
    )
    assert kept == {"payment_intent": "pi_3", "attempt": 2, "retried": True}


def test_without_opentelemetry_installed_spans_are_a_shared_no_op():
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if not installed\n"
        "from django.conf import settings\n"
        "settings.configure(ESCROW_CONNECT={'GATEWAY': 'types.SimpleNamespace'})\n"
        "from django_escrow_connect import observability as o\n"
        "import django_escrow_connect.gateway as g\n"
        "o.install()\n"
        "assert not o.tracing_enabled()\n"
        "assert o.span('a', x=1) is o.span('b')\n"
        "with o.span('a') as s:\n"
        "    s.set_attributes(outcome='ok')\n"
        "o.record_stripe_request('create_transfer')\n"
        "o.record_stripe_error('create_transfer', 'rate_limit', 429)\n"
        "o.record_webhook_event('payment_intent.succeeded', 'processed')\n"
        "g.get_gateway()\n"
        "assert [k for k in sys.modules if k.startswith('opentelemetry.')] == []\n"
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


def test_the_instrumented_gateway_is_still_the_configured_class(market, sim_stripe, monkeypatch):
    """Hosts check ``isinstance`` / ``hasattr`` and patch the gateway's class in tests."""
    from django_escrow_connect.gateway import get_gateway
    from tests.checked_gateway import TransactionCheckingGateway

    gateway = get_gateway()
    assert isinstance(gateway, TransactionCheckingGateway)
    assert hasattr(gateway, "confirm_payment_intent")  # the simulation's own controls
    monkeypatch.setattr(TransactionCheckingGateway, "retrieve_transfer", lambda self, _: "patched")
    assert gateway.retrieve_transfer("tr_1") == "patched"
