"""Radar (``review.*``, ``radar.early_fraud_warning.*``) freezes release until
it closes; bank accounts that error, payouts canceled or updated, and
application fee refunds (issue 12, point 9)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from tests import factories
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL

pytestmark = pytest.mark.django_db


def review(scene: Any, *, open_: bool = True, **overrides: Any) -> dict[str, Any]:
    """A Radar review of the scene's charge, as in Stripe's API reference."""
    payment = scene.payment
    obj: dict[str, Any] = {
        "id": so.new_id("prv"),
        "object": "review",
        "billing_zip": None,
        "charge": payment.stripe_charge_id,
        "closed_reason": None if open_ else "approved",
        "created": so.now(),
        "ip_address": None,
        "ip_address_location": None,
        "livemode": False,
        "open": open_,
        "opened_reason": "rule",
        "payment_intent": payment.stripe_payment_intent_id,
        "reason": "rule" if open_ else "approved",
        "session": None,
    }
    obj.update(overrides)
    return obj


def fraud_warning(scene: Any, *, actionable: bool = True, **overrides: Any) -> dict[str, Any]:
    payment = scene.payment
    obj: dict[str, Any] = {
        "id": so.new_id("issfr"),
        "object": "radar.early_fraud_warning",
        "actionable": actionable,
        "charge": payment.stripe_charge_id,
        "created": so.now(),
        "fraud_type": "made_with_stolen_card",
        "livemode": False,
        "payment_intent": payment.stripe_payment_intent_id,
    }
    obj.update(overrides)
    return obj


def confirm(scene: Any) -> Any:
    client = APIClient()
    client.force_authenticate(scene.customer)
    return client.post(f"/escrow/payments/confirm/{scene.payment.pk}/", {}, format="json")


def holds(scene: Any) -> list[tuple[str, str, bool]]:
    return [
        (i.kind, i.stripe_object_id, i.resolved_at is None)
        for i in swappable.load("PaymentIncident").objects.filter(payment=scene.payment.pk)
    ]


def test_open_review_freezes_release_until_it_closes(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    opened = review(scene)
    assert deliver.platform(so.event("review.opened", opened)).json()["status"] == "processed"
    assert holds(scene) == [("radar_review", opened["id"], True)]
    [notice] = sent.of("radar_hold_opened")
    assert notice["payment"].pk == scene.payment.pk
    assert notice["incident"].code == "rule"

    response = confirm(scene)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "radar_review_open"
    assert scene.refresh().status == "held"
    assert sim_stripe.calls == []

    closed = dict(opened, open=False, reason="approved", closed_reason="approved")
    assert deliver.platform(so.event("review.closed", closed)).json()["status"] == "processed"
    assert holds(scene) == [("radar_review", opened["id"], False)]
    [closing] = sent.of("radar_hold_closed")
    assert closing["incident"].code == "approved"

    # Unfrozen: the release goes to Stripe (which, empty here, does not know
    # the charge; what matters is that the transfer was asked for).
    confirm(scene)
    assert "create_transfer" in [name for name, _ in sim_stripe.calls]


def test_a_late_review_opened_does_not_reopen_a_closed_review(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    opened = review(scene)
    closed = dict(opened, open=False, reason="approved", closed_reason="approved")
    deliver.platform(so.event("review.closed", closed))
    deliver.platform(so.event("review.opened", opened))
    assert holds(scene) == [("radar_review", opened["id"], False)]
    assert sent.of("radar_hold_opened") == []
    assert sent.of("radar_hold_closed") == []


def test_actionable_fraud_warning_freezes_release_until_not_actionable(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    warning = fraud_warning(scene)
    evt = so.event("radar.early_fraud_warning.created", warning)
    assert deliver.platform(evt).json()["status"] == "processed"
    assert holds(scene) == [("early_fraud_warning", warning["id"], True)]
    [notice] = sent.of("radar_hold_opened")
    assert notice["incident"].code == "made_with_stolen_card"

    response = confirm(scene)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "early_fraud_warning_open"

    # A repeated created event records nothing new.
    deliver.platform(so.event("radar.early_fraud_warning.created", warning))
    assert len(holds(scene)) == 1

    evt = so.event("radar.early_fraud_warning.updated", dict(warning, actionable=False))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert holds(scene) == [("early_fraud_warning", warning["id"], False)]
    assert len(sent.of("radar_hold_closed")) == 1
    assert len(sent.of("radar_hold_opened")) == 1


def test_release_succeeds_once_the_warning_is_no_longer_actionable(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    from django_escrow_connect.services import errors
    from django_escrow_connect.services.payments import release_payment

    scene = make_payment("held")
    warning = fraud_warning(scene)
    deliver.platform(so.event("radar.early_fraud_warning.created", warning))
    with pytest.raises(errors.Conflict) as refused:
        release_payment(scene.payment.pk, system=True)
    assert (refused.value.status_code, refused.value.code) == (409, "early_fraud_warning_open")
    deliver.platform(so.event("radar.early_fraud_warning.updated", dict(warning, actionable=False)))
    # The freeze no longer applies: release goes on to the account check.
    with pytest.raises(errors.ServiceError) as next_step:
        release_payment(scene.payment.pk, system=True)
    assert next_step.value.code not in ("early_fraud_warning_open", "radar_review_open")


def test_radar_event_for_an_unknown_charge_is_deferred(deliver: Any, sim_stripe: Any) -> None:
    warning = {
        "id": so.new_id("issfr"),
        "object": "radar.early_fraud_warning",
        "actionable": True,
        "charge": so.new_id("ch"),
        "created": so.now(),
        "fraud_type": "misc",
        "livemode": False,
        "payment_intent": None,
    }
    evt = so.event("radar.early_fraud_warning.created", warning)
    assert deliver.platform(evt).json()["status"] == "deferred"


@pytest.mark.parametrize(
    ("event_type", "build"),
    [("review.opened", review), ("radar.early_fraud_warning.created", fraud_warning)],
)
@pytest.mark.parametrize("object_id", [None, "", 123, "x" * 256], ids=lambda v: repr(v)[:12])
def test_a_radar_object_without_a_stripe_id_is_recorded_failed_not_a_500(
    deliver: Any,
    make_payment: Any,
    sim_stripe: Any,
    sent: Any,
    event_type: str,
    build: Any,
    object_id: Any,
) -> None:
    """No id (or one no Stripe object has, longer than its column) raised a
    ValueError (a DataError on PostgreSQL) in the handler: a 500 on every
    delivery, for a body Stripe sending again cannot mend."""
    scene = make_payment("held")

    response = deliver.platform(so.event(event_type, build(scene, id=object_id)))

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    row = swappable.load("WebhookEvent").objects.get()
    assert row.status == "failed"
    assert "no Stripe id" in row.last_error
    assert holds(scene) == []
    assert sent.names() == ["webhook_processing_failed"]


def bank_account(account_id: str, **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": so.new_id("ba"),
        "object": "bank_account",
        "account": account_id,
        "account_holder_name": "Jane Doer",
        "account_holder_type": "individual",
        "bank_name": "STRIPE TEST BANK",
        "country": "US",
        "currency": "usd",
        "default_for_currency": True,
        "fingerprint": "1JWtPxqbdX5Gamtz",
        "last4": "6789",
        "metadata": {},
        "routing_number": "110000000",
        "status": "new",
    }
    obj.update(overrides)
    return obj


def test_bank_account_errored_sends_external_account_errored(
    deliver: Any, sim_stripe: Any, sent: Any
) -> None:
    from tests.webhooks.conftest import simulated_account

    acct = simulated_account()
    factories.make_account(owner_user=factories.make_user("doer"), stripe_account_id=acct)
    bank = bank_account(acct, status="errored")
    evt = so.event(
        "account.external_account.updated",
        bank,
        account=acct,
        previous_attributes={"status": "verified"},
    )
    assert deliver.connect(evt).json()["status"] == "processed"
    [notice] = sent.of("external_account_errored")
    assert notice["account"].stripe_account_id == acct
    assert notice["external_account"]["id"] == bank["id"]

    # An update of something else on an errored bank account sends nothing more.
    evt = so.event(
        "account.external_account.updated",
        bank,
        account=acct,
        previous_attributes={"default_for_currency": False},
    )
    assert deliver.connect(evt).json()["status"] == "processed"
    assert len(sent.of("external_account_errored")) == 1

    # A healthy bank account sends nothing.
    ok = bank_account(acct, status="verified")
    evt = so.event(
        "account.external_account.updated", ok, account=acct, previous_attributes={"status": "new"}
    )
    assert deliver.connect(evt).json()["status"] == "processed"
    assert len(sent.of("external_account_errored")) == 1


def test_payout_updated_to_failed_records_an_incident_once(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    kit.make_transfer(scene.payment)  # what paid the account
    acct = scene.account.stripe_account_id
    payout = so.payout(status="failed", failure_code="account_closed")
    evt = so.event("payout.updated", payout, account=acct)
    assert deliver.connect(evt).json()["status"] == "processed"
    deliver.connect(so.event("payout.failed", payout, account=acct))
    [incident] = swappable.load("TransferIncident").objects.all()
    assert (incident.kind, incident.stripe_payout_id) == ("payout_failed", payout["id"])
    assert len(sent.of("payout_failed")) == 1


def test_a_failed_payout_of_a_second_payee_records_an_incident_once(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    """A split's second payee is no payment's destination: the incident goes
    on the payment that paid them, and so ``payout_failed`` is sent once."""
    scene = make_payment("released", released_in_parts=True, amount_transferred=9_000)
    partner = factories.make_account(owner_user=factories.make_user("partner"))
    acct = partner.stripe_account_id
    Payee = swappable.load("EscrowPayee")
    for position, (user, account) in enumerate(
        [(scene.doer, scene.account), (partner.owner_user, partner)], 1
    ):
        Payee.objects.create(
            payment=scene.payment,
            position=position,
            user=user,
            basis_points=5_000,
            destination_account_id=account.stripe_account_id,
        )
    # The partner's share, sent (the doer's transfer would belong to a release row too).
    kit.make_transfer(scene.payment, amount=4_500, destination_account_id=acct)
    payout = so.payout(status="failed", failure_code="account_closed")
    assert deliver.connect(so.event("payout.updated", payout, account=acct)).status_code == 200
    assert deliver.connect(so.event("payout.failed", payout, account=acct)).status_code == 200
    [incident] = swappable.load("TransferIncident").objects.all()
    assert (incident.payment_id, incident.destination_account_id) == (scene.payment.pk, acct)
    assert len(sent.of("payout_failed")) == 1


def test_a_payment_that_never_paid_the_account_gets_no_payout_incident(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    """The incident goes on a payment that paid the account: not on a newer
    one still held (on PostgreSQL it sorted first: no released_at) nor on a
    canceled one."""
    paid = make_payment("released", amount_transferred=9_000)
    kit.make_transfer(paid.payment)
    acct = paid.account.stripe_account_id
    for status in ("held", "canceled"):
        make_payment(status, destination_account_id=acct)
    payout = so.payout(status="failed", failure_code="account_closed")
    assert deliver.connect(so.event("payout.failed", payout, account=acct)).status_code == 200
    [incident] = swappable.load("TransferIncident").objects.all()
    assert incident.payment_id == paid.payment.pk
    assert len(sent.of("payout_failed")) == 1


def test_a_released_manual_capture_payment_is_what_paid_the_account(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    """A destination charge pays the account with no transfer row: the
    payment released to it is found by its ``released_at``."""
    scene = make_payment("released", strategy=MANUAL, released_at=timezone.now())
    acct = scene.account.stripe_account_id
    payout = so.payout(status="failed", failure_code="account_closed")
    assert deliver.connect(so.event("payout.failed", payout, account=acct)).status_code == 200
    [incident] = swappable.load("TransferIncident").objects.all()
    assert incident.payment_id == scene.payment.pk


@pytest.mark.parametrize("status", ["canceled", "in_transit"])
def test_payout_canceled_or_updated_is_logged(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any, status: str, caplog: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    acct = scene.account.stripe_account_id
    payout = so.payout(status=status)
    event_type = "payout.canceled" if status == "canceled" else "payout.updated"
    caplog.set_level("INFO", logger="django_escrow_connect.services")
    assert deliver.connect(so.event(event_type, payout, account=acct)).json()["status"] == (
        "processed"
    )
    assert not swappable.load("TransferIncident").objects.exists()
    assert sent.log == []
    assert any(f"payout {status}" in r.getMessage() for r in caplog.records)


def test_fetch_missed_events_asks_for_at_most_20_types_per_call(
    monkeypatch: Any,
    make_payment: Any,
    sim_stripe: Any,
    sent: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """With Radar and fee events the platform handles more than 20 types, the
    most Stripe's Events API takes at once: the types are listed in chunks and
    every handled type is asked for; events are processed oldest first."""
    from datetime import timedelta

    from django.utils import timezone

    from django_escrow_connect.webhooks import operations, registry

    scene = make_payment("held")
    opened = review(scene)
    closed = dict(opened, open=False, reason="approved", closed_reason="approved")
    asked: list[list[str]] = []

    class Gateway:
        def list_events(self, *, created_gte: int, types: Any, stripe_account: Any) -> Any:
            if len(types) > 20:
                raise ValueError("Stripe accepts at most 20 event types at once")
            asked.append(list(types))
            now = so.now()
            # Newest first, as Stripe lists.
            found = [
                so.event("review.closed", closed, created=now),
                so.event("review.opened", opened, created=now - 60),
            ]
            return iter([e for e in found if e["type"] in types])

    monkeypatch.setattr(operations, "get_gateway", Gateway)
    assert len(registry.event_types("platform")) > 20
    with django_capture_on_commit_callbacks(execute=True):
        [result] = operations.fetch_missed_events(timezone.now() - timedelta(hours=1))
    assert result.error == ""
    assert sorted(t for chunk in asked for t in chunk) == registry.event_types("platform")
    assert result.seen == 2
    assert holds(scene) == [("radar_review", opened["id"], False)]
    # Oldest first: opened, then closed (the other way round sends nothing).
    assert sent.names() == ["radar_hold_opened", "radar_hold_closed"]
