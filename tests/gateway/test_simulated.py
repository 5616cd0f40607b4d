"""The simulated gateway: Stripe's rules, test cards, events and fault injection.

Every test gets its own :class:`SimulatedStripe` and an :class:`EventCollector`
as the event sink, so nothing here depends on the webhook pipeline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from django_escrow_connect import conf
from django_escrow_connect import simulation as simulated
from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    GatewayPermissionDenied,
    IdempotencyConflict,
    InvalidRequest,
    InvalidWebhookPayload,
    ResourceMissing,
    SignatureVerificationFailed,
    TemporarilyUnavailable,
)
from django_escrow_connect.gateway.base import PaymentGateway
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.gateway.types import (
    AccountSnapshot,
    ChargeSnapshot,
    DisputeSnapshot,
    PaymentIntentSnapshot,
    PayoutSnapshot,
    RefundSnapshot,
    TransferSnapshot,
)
from django_escrow_connect.simulation import (
    CARDS,
    CONNECT_ENDPOINT,
    PLATFORM_ENDPOINT,
    SIMULATED_WEBHOOK_SECRET,
    EventCollector,
    SimulatedGateway,
    SimulatedStripe,
    onboarding_url,
    set_event_sink,
)

PLATFORM_SECRET = "whsec_platform_test_secret"  # tests/settings.py
CONNECT_SECRET = "whsec_connect_test_secret"
DAY = 24 * 3600

#: Which snapshot type parses an event's data.object, by event type prefix.
PARSERS: dict[str, Any] = {
    "account.updated": AccountSnapshot,
    "payment_intent.": PaymentIntentSnapshot,
    "charge.dispute.": DisputeSnapshot,
    "charge.": ChargeSnapshot,
    "transfer.": TransferSnapshot,
    "refund.": RefundSnapshot,
    "payout.": PayoutSnapshot,
}


@pytest.fixture
def events() -> Iterator[EventCollector]:
    collector = EventCollector()
    previous = set_event_sink(collector)
    yield collector
    set_event_sink(previous)


@pytest.fixture
def store() -> SimulatedStripe:
    return SimulatedStripe()


@pytest.fixture
def sim(store: SimulatedStripe, events: EventCollector) -> SimulatedGateway:
    return SimulatedGateway(store)


_keys = iter(range(10**9))


def key() -> str:
    return f"test-key-{next(_keys)}"


def new_account(sim: SimulatedGateway, *, ready: bool = True) -> str:
    account = sim.create_account(
        idempotency_key=key(),
        country="US",
        email="seller@example.com",
        business_type="individual",
        metadata={"owner": "1"},
    )
    if ready:
        sim.complete_onboarding(account.id)
    return account.id


def new_intent(
    sim: SimulatedGateway,
    *,
    amount: int = 10_000,
    capture_method: Any = "automatic",
    destination: str | None = None,
    fee: int | None = None,
    group: str = "task_1",
) -> PaymentIntentSnapshot:
    return sim.create_payment_intent(
        idempotency_key=key(),
        amount=amount,
        currency="usd",
        transfer_group=group,
        metadata={"task": "1"},
        capture_method=capture_method,
        destination=destination,
        application_fee_amount=fee,
    )


def paid_intent(
    sim: SimulatedGateway, card: str = "success", **kwargs: Any
) -> PaymentIntentSnapshot:
    intent = new_intent(sim, **kwargs)
    return sim.confirm_payment_intent(intent.id, CARDS[card].number)


def parse(event: dict[str, Any]) -> Any:
    for prefix, parser in PARSERS.items():
        if event["type"].startswith(prefix):
            return parser.from_dict(event["data"]["object"])
    return None


def close_to(value: datetime | None, expected: datetime, seconds: int = 5) -> bool:
    return value is not None and abs((value - expected).total_seconds()) <= seconds


# --- the protocol -----------------------------------------------------------------------


def test_implements_the_gateway_protocol() -> None:
    assert isinstance(SimulatedGateway(), PaymentGateway)


def test_does_not_import_stripe() -> None:
    code = (
        "import sys, django_escrow_connect.simulation, "
        "django_escrow_connect.gateway.signing; "
        "assert 'stripe' not in sys.modules, 'stripe imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_default_gateways_share_the_process_wide_store(events: EventCollector) -> None:
    simulated.reset()
    account = new_account(SimulatedGateway(), ready=False)
    assert SimulatedGateway().retrieve_account(account).id == account
    simulated.reset()
    with pytest.raises(ResourceMissing):
        SimulatedGateway().retrieve_account(account)


# --- idempotency -----------------------------------------------------------------------


def test_same_key_and_params_replay_the_stored_response(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    kwargs: dict[str, Any] = {
        "idempotency_key": "pay-task-1",
        "amount": 5000,
        "currency": "usd",
        "transfer_group": "task_1",
        "metadata": {"task": "1"},
        "capture_method": "automatic",
    }
    first = sim.create_payment_intent(**kwargs)
    second = sim.create_payment_intent(**kwargs)
    assert second == first
    assert len(store.payment_intents) == 1
    assert events.types == ["payment_intent.created"]
    assert store.call_count("create_payment_intent") == 2


def test_replay_returns_the_first_response_not_the_current_state(sim: SimulatedGateway) -> None:
    intent = new_intent(sim)
    sim.confirm_payment_intent(intent.id, "success")
    cancel_key = key()
    with pytest.raises(InvalidRequest):
        sim.cancel_payment_intent(intent.id, idempotency_key=cancel_key)
    other = new_intent(sim)
    canceled = sim.cancel_payment_intent(other.id, idempotency_key="cancel-other")
    assert canceled.status == "canceled"
    assert sim.cancel_payment_intent(other.id, idempotency_key="cancel-other") == canceled


def test_same_key_with_other_params_is_a_conflict(sim: SimulatedGateway) -> None:
    sim.create_account(
        idempotency_key="acct-1", country="US", email=None, business_type=None, metadata={}
    )
    with pytest.raises(IdempotencyConflict) as exc_info:
        sim.create_account(
            idempotency_key="acct-1", country="GB", email=None, business_type=None, metadata={}
        )
    assert exc_info.value.http_status == 400
    assert exc_info.value.error_type == "idempotency_error"
    assert not exc_info.value.is_transient


def test_same_key_on_another_method_is_a_conflict(sim: SimulatedGateway) -> None:
    intent = paid_intent(sim, capture_method="manual")
    sim.capture_payment_intent(intent.id, idempotency_key="op-1")
    with pytest.raises(IdempotencyConflict):
        sim.cancel_payment_intent(intent.id, idempotency_key="op-1")


def test_a_refusal_is_stored_under_its_key_and_replayed(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    """Stripe stores the answer of every request that started executing, errors too."""
    account = new_account(sim, ready=False)
    intent = paid_intent(sim)
    kwargs: dict[str, Any] = {
        "idempotency_key": "release-1",
        "amount": 9000,
        "currency": "usd",
        "destination": account,
        "source_transaction": intent.latest_charge,
        "transfer_group": "task_1",
        "metadata": {},
    }
    with pytest.raises(InvalidRequest) as first:
        sim.create_transfer(**kwargs)
    sim.complete_onboarding(account)
    # The account can receive transfers now, but the key answers as it first did.
    with pytest.raises(InvalidRequest) as replayed:
        sim.create_transfer(**kwargs)
    for attribute in ("code", "message", "param", "http_status", "error_type"):
        assert getattr(replayed.value, attribute) == getattr(first.value, attribute)
    assert replayed.value.code == "insufficient_capabilities_for_transfer"
    assert replayed.value.request_id != first.value.request_id
    assert store.transfers == {}
    assert sim.create_transfer(**{**kwargs, "idempotency_key": "release-2"}).amount == 9000


def test_a_stored_refusal_is_forgotten_after_24_hours(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    account = new_account(sim, ready=False)
    charge = paid_intent(sim).latest_charge or ""
    kwargs: dict[str, Any] = {
        "idempotency_key": "release-1",
        "amount": 9000,
        "currency": "usd",
        "destination": account,
        "source_transaction": charge,
        "transfer_group": "task_1",
        "metadata": {},
    }
    with pytest.raises(InvalidRequest):
        sim.create_transfer(**kwargs)
    sim.complete_onboarding(account)
    store.advance_time(DAY)
    assert sim.create_transfer(**kwargs).amount == 9000


def test_parameter_validation_errors_are_not_stored(sim: SimulatedGateway) -> None:
    """A request that fails validation never started executing: the key stays free."""
    kwargs: dict[str, Any] = {
        "idempotency_key": "pay-1",
        "amount": 10,
        "currency": "usd",
        "transfer_group": "task_1",
        "metadata": {},
        "capture_method": "automatic",
    }
    with pytest.raises(InvalidRequest, match="at least"):
        sim.create_payment_intent(**kwargs)
    # Same key, corrected amount: a new request, not a replay nor a conflict.
    assert sim.create_payment_intent(**{**kwargs, "amount": 5000}).amount == 5000


def test_an_access_error_is_not_stored(sim: SimulatedGateway, store: SimulatedStripe) -> None:
    store.fail_next("create_payment_intent", GatewayPermissionDenied("revoked", http_status=403))
    kwargs: dict[str, Any] = {
        "idempotency_key": "pay-1",
        "amount": 5000,
        "currency": "usd",
        "transfer_group": "task_1",
        "metadata": {},
        "capture_method": "automatic",
    }
    with pytest.raises(GatewayPermissionDenied):
        sim.create_payment_intent(**kwargs)
    assert sim.create_payment_intent(**kwargs).amount == 5000


def test_a_stored_500_is_replayed_for_the_same_key(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    """fail_next(stored=True): Stripe started, failed with a 500 and kept that answer."""
    account = new_account(sim)
    charge = paid_intent(sim).latest_charge or ""
    events.clear()
    error = TemporarilyUnavailable("An unknown error occurred", http_status=500)
    store.fail_next("create_transfer", error, stored=True)
    kwargs: dict[str, Any] = {
        "idempotency_key": "release-1",
        "amount": 9000,
        "currency": "usd",
        "destination": account,
        "source_transaction": charge,
        "transfer_group": "task_1",
        "metadata": {},
    }
    for _ in range(2):
        with pytest.raises(TemporarilyUnavailable) as raised:
            sim.create_transfer(**kwargs)
        assert raised.value.http_status == 500
    assert store.transfers == {}
    assert events.types == []
    # Looked up (nothing), then sent under a new key: it goes through.
    assert sim.list_transfers(transfer_group="task_1") == []
    assert sim.create_transfer(**{**kwargs, "idempotency_key": "release-2"}).amount == 9000


def test_a_failure_after_the_effect_cannot_also_be_stored(store: SimulatedStripe) -> None:
    with pytest.raises(ValueError, match="stores the success"):
        store.fail_next(
            "create_transfer", TemporarilyUnavailable("x"), after_effect=True, stored=True
        )


def test_a_key_replays_for_24_hours_then_is_a_new_request(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    def create() -> str:
        return sim.create_account(
            idempotency_key="owner-1", country="US", email=None, business_type=None, metadata={}
        ).id

    first = create()
    store.advance_time(24 * 3600 - 1)
    assert create() == first
    store.advance_time(1)
    assert create() != first
    assert len(store.accounts) == 2


def test_list_accounts_created_since_newest_first(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    old = new_account(sim)
    store.advance_time(3600)
    since = datetime.fromtimestamp(store.now(), tz=timezone.utc)
    newer = [new_account(sim), new_account(sim)]
    assert [a.id for a in sim.list_accounts(created_gte=since)] == newer[::-1]
    assert old in [a.id for a in sim.list_accounts(created_gte=since - timedelta(hours=2))]


def test_list_payment_intents_of_a_customer_created_since_newest_first(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    customer = sim.create_customer(idempotency_key=key(), metadata={}).id

    def intent(customer: str | None = customer) -> str:
        return sim.create_payment_intent(
            idempotency_key=key(),
            amount=1_000,
            currency="usd",
            transfer_group="tip_1",
            metadata={},
            capture_method="automatic",
            destination=None,
            application_fee_amount=None,
            customer=customer,
        ).id

    old = intent()
    store.advance_time(3600)
    since = datetime.fromtimestamp(store.now(), tz=timezone.utc)
    newer = [intent(), intent()]
    intent(customer=None)  # not the Customer's: never listed

    listed = sim.list_payment_intents(customer=customer, created_gte=since)
    assert [i.id for i in listed] == newer[::-1]
    earlier = since - timedelta(hours=2)
    assert old in [i.id for i in sim.list_payment_intents(customer=customer, created_gte=earlier)]


def test_idempotency_key_is_required(sim: SimulatedGateway) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        sim.create_account(
            idempotency_key=" ", country="US", email=None, business_type=None, metadata={}
        )


def test_concurrent_requests_with_one_key_create_one_object(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    results: list[str] = []

    def pay() -> None:
        intent = sim.create_payment_intent(
            idempotency_key="same",
            amount=5000,
            currency="usd",
            transfer_group="g",
            metadata={},
            capture_method="automatic",
        )
        results.append(intent.id)

    threads = [threading.Thread(target=pay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert len(store.payment_intents) == 1


# --- connected accounts ----------------------------------------------------------------------


def test_new_account_is_pending(sim: SimulatedGateway) -> None:
    account = sim.create_account(
        idempotency_key=key(),
        country="us",
        email="seller@example.com",
        business_type="individual",
        metadata={"owner": "7"},
    )
    assert account.id.startswith("acct_")
    assert account.country == "US"
    assert account.default_currency == "usd"
    assert not account.details_submitted
    assert not account.charges_enabled
    assert not account.payouts_enabled
    assert account.capabilities == {"card_payments": "inactive", "transfers": "inactive"}
    assert not account.transfers_active
    assert {"external_account", "tos_acceptance.date", "individual.dob.day"} <= set(
        account.currently_due
    )
    assert account.disabled_reason == "requirements.past_due"
    assert account.metadata == {"owner": "7"}


def test_account_link_points_at_the_simulated_onboarding_page(sim: SimulatedGateway) -> None:
    account = new_account(sim, ready=False)
    link = sim.create_account_link(
        account_id=account,
        link_type="account_onboarding",
        refresh_url="https://market.example/refresh/",
        return_url="https://market.example/return/",
    )
    assert link.url == onboarding_url(account)
    assert link.url.endswith(f"/simulated/onboarding/{account}/")
    assert link.expires_at > datetime.now(timezone.utc)
    stored = sim.latest_account_link(account)
    assert stored is not None
    assert stored["return_url"] == "https://market.example/return/"
    assert stored["refresh_url"] == "https://market.example/refresh/"


def test_onboarding_url_falls_back_to_the_literal_path() -> None:
    assert onboarding_url("acct_123") == "/escrow/simulated/onboarding/acct_123/"


def test_account_update_links_are_refused_for_stripe_collected_requirements(
    sim: SimulatedGateway,
) -> None:
    account = new_account(sim)
    with pytest.raises(InvalidRequest) as exc_info:
        sim.create_account_link(
            account_id=account,
            link_type="account_update",
            refresh_url="https://x.example/r",
            return_url="https://x.example/d",
        )
    assert exc_info.value.param == "type"


def test_login_link_needs_completed_onboarding(sim: SimulatedGateway) -> None:
    account = new_account(sim, ready=False)
    with pytest.raises(InvalidRequest):
        sim.create_login_link(account_id=account)
    sim.complete_onboarding(account)
    assert account in sim.create_login_link(account_id=account).url


def test_account_session_secret_is_not_stored(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    account = new_account(sim, ready=False)
    session = sim.create_account_session(account_id=account)
    assert session.client_secret.startswith("accs_secret__")
    assert session.client_secret not in json.dumps(store.accounts)
    with pytest.raises(TypeError):
        sim.create_account_session(account_id=account, components="account_onboarding")


def test_missing_account(sim: SimulatedGateway) -> None:
    with pytest.raises(ResourceMissing) as exc_info:
        sim.retrieve_account("acct_nope")
    assert exc_info.value.code == "resource_missing"
    assert exc_info.value.http_status == 404
    assert exc_info.value.request_id
    assert exc_info.value.request_id.startswith("req_")


def test_complete_onboarding_verifies_the_account_and_emits_connect_events(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    account_id = new_account(sim, ready=False)
    account = sim.complete_onboarding(account_id)
    assert account.details_submitted
    assert account.charges_enabled
    assert account.payouts_enabled
    assert account.transfers_active
    assert account.capabilities == {"card_payments": "active", "transfers": "active"}
    assert account.currently_due == account.eventually_due == account.past_due == ()
    assert account.disabled_reason is None
    assert sim.retrieve_account(account_id) == account

    assert events.types == ["account.updated", "capability.updated", "capability.updated"]
    for delivery in events.deliveries:
        assert delivery.endpoint == CONNECT_ENDPOINT
        assert delivery.event["account"] == account_id
        assert sim.verify_webhook(delivery.payload, delivery.signature, [CONNECT_SECRET], 300)
    updated = events.of_type("account.updated")[0]
    assert AccountSnapshot.from_dict(updated["data"]["object"]) == account
    assert updated["data"]["previous_attributes"]["details_submitted"] is False
    capability = events.of_type("capability.updated")[1]["data"]["object"]
    assert capability["object"] == "capability"
    assert capability["status"] == "active"

    events.clear()
    sim.store.advance_time(5)  # a later second must not count as a change either
    sim.complete_onboarding(account_id)
    assert events.types == []


def test_require_information_disables_transfers(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    account_id = new_account(sim)
    events.clear()
    account = sim.require_information(account_id, ["individual.verification.document"])
    assert not account.transfers_active
    assert account.past_due == ("individual.verification.document",)
    assert events.types[0] == "account.updated"


def test_deauthorize_emits_the_event_and_revokes_access(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    account_id = new_account(sim)
    events.clear()
    sim.deauthorize(account_id)
    (delivery,) = events.deliveries
    assert delivery.endpoint == CONNECT_ENDPOINT
    assert delivery.event["type"] == "account.application.deauthorized"
    assert delivery.event["account"] == account_id
    assert delivery.event["data"]["object"]["object"] == "application"
    with pytest.raises(GatewayPermissionDenied) as exc_info:
        sim.retrieve_account(account_id)
    assert exc_info.value.code == "account_invalid"


# --- payment intents and cards --------------------------------------------------------------


def test_new_payment_intent(sim: SimulatedGateway, events: EventCollector) -> None:
    intent = new_intent(sim)
    assert intent.id.startswith("pi_")
    assert intent.status == "requires_payment_method"
    assert intent.client_secret is not None
    assert re.fullmatch(rf"{intent.id}_secret_\w+", intent.client_secret)
    assert intent.transfer_group == "task_1"
    assert intent.metadata == {"task": "1"}
    assert events.types == ["payment_intent.created"]


def test_application_fee_needs_a_destination(sim: SimulatedGateway) -> None:
    with pytest.raises(InvalidRequest) as exc_info:
        new_intent(sim, fee=100)
    assert exc_info.value.param == "application_fee_amount"


def test_destination_must_accept_transfers(sim: SimulatedGateway) -> None:
    account = new_account(sim, ready=False)
    with pytest.raises(InvalidRequest) as exc_info:
        new_intent(sim, destination=account)
    assert exc_info.value.code == "insufficient_capabilities_for_transfer"


def test_amount_below_the_minimum(sim: SimulatedGateway) -> None:
    with pytest.raises(InvalidRequest) as exc_info:
        new_intent(sim, amount=10)
    assert exc_info.value.code == "amount_too_small"


@pytest.mark.parametrize("capture_method", ["automatic", "automatic_async"])
def test_success_card_captures_at_once(
    sim: SimulatedGateway, events: EventCollector, capture_method: str
) -> None:
    intent = paid_intent(sim, capture_method=capture_method)
    assert intent.status == "succeeded"
    assert intent.amount_received == 10_000
    assert intent.amount_capturable == 0
    assert intent.latest_charge is not None
    assert intent.latest_charge.startswith("ch_")
    charge = sim.retrieve_charge(intent.latest_charge)
    assert charge.payment_intent == intent.id
    assert charge.amount_captured == 10_000
    assert charge.balance_transaction is not None
    assert charge.balance_transaction.startswith("txn_")
    assert charge.capture_before is None
    assert events.types == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]


def test_declined_card(sim: SimulatedGateway, events: EventCollector) -> None:
    intent = paid_intent(sim, "declined")
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error["code"] == "card_declined"
    assert intent.last_payment_error["decline_code"] == "generic_decline"
    assert intent.last_payment_error["type"] == "card_error"
    assert "payment_intent.payment_failed" in events.types
    assert "charge.failed" in events.types
    retried = sim.confirm_payment_intent(intent.id, "4242 4242 4242 4242")
    assert retried.status == "succeeded"
    assert retried.last_payment_error is None


def test_unknown_card_is_declined(sim: SimulatedGateway) -> None:
    intent = paid_intent(sim)
    other = new_intent(sim)
    declined = sim.confirm_payment_intent(other.id, "5555555555554444")
    assert declined.status == "requires_payment_method"
    assert intent.status == "succeeded"


@pytest.mark.parametrize("succeed", [True, False])
def test_card_requiring_authentication(
    sim: SimulatedGateway, events: EventCollector, succeed: bool
) -> None:
    intent = paid_intent(sim, "authentication_required")
    assert intent.status == "requires_action"
    assert events.types[-1] == "payment_intent.requires_action"
    result = sim.complete_authentication(intent.id, succeed)
    if succeed:
        assert result.status == "succeeded"
        assert events.types[-1] == "payment_intent.succeeded"
    else:
        assert result.status == "requires_payment_method"
        assert result.last_payment_error is not None
        assert result.last_payment_error["code"] == "payment_intent_authentication_failure"
        assert events.types[-1] == "payment_intent.payment_failed"
    with pytest.raises(InvalidRequest):
        sim.complete_authentication(intent.id, True)


def test_dispute_card_succeeds_then_is_disputed(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    intent = paid_intent(sim, "disputed")
    assert intent.status == "succeeded"
    assert events.types[-2:] == ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
    created = events.of_type("charge.dispute.created")[0]
    assert created["request"] == {"id": None, "idempotency_key": None}
    dispute = DisputeSnapshot.from_dict(created["data"]["object"])
    assert dispute.id.startswith("dp_")
    assert dispute.status == "needs_response"
    assert dispute.reason == "fraudulent"
    assert dispute.payment_intent == intent.id
    assert dispute.amount == 10_000
    assert dispute.evidence_due_by is not None
    assert sim.retrieve_charge(dispute.charge or "").disputed
    assert sim.retrieve_dispute(dispute.id) == dispute

    with pytest.raises(InvalidRequest) as exc_info:
        sim.create_refund(idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={})
    assert exc_info.value.code == "charge_disputed"

    events.clear()
    won = sim.close_dispute(dispute.id, won=True)
    assert won.status == "won"
    assert events.types == ["charge.dispute.closed", "charge.dispute.funds_reinstated"]
    with pytest.raises(InvalidRequest):
        sim.close_dispute(dispute.id, won=False)


def test_lost_dispute_reinstates_nothing(sim: SimulatedGateway, events: EventCollector) -> None:
    intent = paid_intent(sim)
    dispute = sim.open_dispute(intent.id, reason="product_not_received")
    events.clear()
    assert sim.close_dispute(dispute.id, won=False).status == "lost"
    assert events.types == ["charge.dispute.closed"]


def test_dispute_card_with_manual_capture_is_disputed_once_captured(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    intent = paid_intent(sim, "disputed", capture_method="manual")
    assert intent.status == "requires_capture"
    assert "charge.dispute.created" not in events.types
    sim.capture_payment_intent(intent.id, idempotency_key=key())
    assert "charge.dispute.created" in events.types


# --- manual capture -------------------------------------------------------------------------


def test_manual_capture_authorises_with_a_deadline(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    intent = paid_intent(sim, capture_method="manual")
    assert intent.status == "requires_capture"
    assert intent.amount_capturable == 10_000
    assert intent.amount_received == 0
    assert intent.capture_before is None  # the charge was not expanded
    deadline = datetime.now(timezone.utc) + timedelta(days=7)
    expanded = sim.retrieve_payment_intent(intent.id, expand_charge=True)
    assert close_to(expanded.capture_before, deadline)
    assert expanded.latest_charge == intent.latest_charge
    charge = sim.retrieve_charge(intent.latest_charge or "")
    assert close_to(charge.capture_before, deadline)
    assert charge.amount_captured == 0
    assert charge.balance_transaction is None
    assert events.types[-2:] == ["charge.succeeded", "payment_intent.amount_capturable_updated"]
    assert PaymentIntentSnapshot.from_dict(events.events[-1]["data"]["object"]).status == (
        "requires_capture"
    )


def test_capture(sim: SimulatedGateway, events: EventCollector) -> None:
    intent = paid_intent(sim, capture_method="manual")
    events.clear()
    captured = sim.capture_payment_intent(intent.id, idempotency_key=key())
    assert captured.status == "succeeded"
    assert captured.amount_received == 10_000
    assert captured.amount_capturable == 0
    charge = sim.retrieve_charge(captured.latest_charge or "")
    assert charge.amount_captured == 10_000
    assert charge.balance_transaction is not None
    assert events.types == ["charge.captured", "payment_intent.succeeded"]


def test_partial_capture_and_limits(sim: SimulatedGateway) -> None:
    intent = paid_intent(sim, capture_method="manual")
    with pytest.raises(InvalidRequest) as exc_info:
        sim.capture_payment_intent(intent.id, idempotency_key=key(), amount_to_capture=10_001)
    assert exc_info.value.code == "amount_too_large"
    captured = sim.capture_payment_intent(intent.id, idempotency_key=key(), amount_to_capture=6000)
    assert captured.amount_received == 6000
    charge = sim.retrieve_charge(captured.latest_charge or "")
    assert charge.amount_captured == 6000
    assert charge.amount_refunded == 0  # API 2025-03-31.basil+: no refund for the release
    with pytest.raises(InvalidRequest) as exc_info:
        sim.capture_payment_intent(intent.id, idempotency_key=key())
    assert exc_info.value.code == "payment_intent_unexpected_state"
    refund = sim.create_refund(
        idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={}
    )
    assert refund.amount == 6000


def test_destination_charge_capture_transfers_the_whole_amount_and_takes_the_fee_back(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    account = new_account(sim)
    intent = paid_intent(
        sim, capture_method="manual", destination=account, fee=1000, group="task_9"
    )
    assert sim.list_transfers(transfer_group="task_9") == []
    events.clear()
    sim.capture_payment_intent(intent.id, idempotency_key=key())
    assert events.types == [
        "charge.captured",
        "payment_intent.succeeded",
        "transfer.created",
        "application_fee.created",
    ]
    (transfer,) = sim.list_transfers(transfer_group="task_9")
    assert transfer.amount == 10000
    assert transfer.destination == account
    assert transfer.source_transaction == intent.latest_charge
    assert transfer.transfer_group == "task_9"
    assert TransferSnapshot.from_dict(events.events[-2]["data"]["object"]) == transfer
    fee = events.events[-1]["data"]["object"]
    assert (fee["object"], fee["amount"], fee["account"]) == ("application_fee", 1000, account)
    assert fee["charge"] == intent.latest_charge
    # The connected account keeps the transfer less the application fee.
    assert store.balances[account]["usd"] == 9000


def test_capture_with_a_new_fee(sim: SimulatedGateway, store: SimulatedStripe) -> None:
    account = new_account(sim)
    intent = paid_intent(sim, capture_method="manual", destination=account, fee=1000, group="g2")
    sim.capture_payment_intent(intent.id, idempotency_key=key(), application_fee_amount=500)
    assert sim.list_transfers(transfer_group="g2")[0].amount == 10000
    (fee,) = store.application_fees.values()
    assert fee["amount"] == 500
    assert store.balances[account]["usd"] == 9500


def test_authorisation_lapses_after_seven_days(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    intent = paid_intent(sim, capture_method="manual")
    store.advance_time(6 * DAY)
    assert sim.retrieve_payment_intent(intent.id).status == "requires_capture"
    events.clear()
    store.advance_time(DAY + 1)
    assert events.types == ["charge.expired", "payment_intent.canceled"]
    expired = sim.retrieve_payment_intent(intent.id)
    assert expired.status == "canceled"
    assert expired.cancellation_reason == "expired"
    with pytest.raises(InvalidRequest) as exc_info:
        sim.capture_payment_intent(intent.id, idempotency_key=key())
    assert exc_info.value.code == "payment_intent_unexpected_state"


def test_cancel(sim: SimulatedGateway, events: EventCollector) -> None:
    intent = paid_intent(sim, capture_method="manual")
    events.clear()
    canceled = sim.cancel_payment_intent(
        intent.id, idempotency_key=key(), cancellation_reason="requested_by_customer"
    )
    assert canceled.status == "canceled"
    assert canceled.cancellation_reason == "requested_by_customer"
    assert canceled.amount_capturable == 0
    assert events.types == ["payment_intent.canceled"]
    succeeded = paid_intent(sim)
    with pytest.raises(InvalidRequest) as exc_info:
        sim.cancel_payment_intent(succeeded.id, idempotency_key=key())
    assert exc_info.value.code == "payment_intent_unexpected_state"


def test_missing_payment_intent(sim: SimulatedGateway) -> None:
    with pytest.raises(ResourceMissing):
        sim.retrieve_payment_intent("pi_missing")
    with pytest.raises(ResourceMissing):
        sim.capture_payment_intent("pi_missing", idempotency_key=key())


# --- transfers and reversals --------------------------------------------------------------


def transfer(sim: SimulatedGateway, account: str, charge: str, amount: int) -> TransferSnapshot:
    return sim.create_transfer(
        idempotency_key=key(),
        amount=amount,
        currency="usd",
        destination=account,
        source_transaction=charge,
        transfer_group="task_1",
        metadata={"release": "1"},
    )


def test_transfer_from_a_charge(sim: SimulatedGateway, events: EventCollector) -> None:
    account = new_account(sim)
    intent = paid_intent(sim)
    events.clear()
    result = transfer(sim, account, intent.latest_charge or "", 9000)
    assert result.id.startswith("tr_")
    assert result.destination == account
    assert result.source_transaction == intent.latest_charge
    assert result.metadata == {"release": "1"}
    assert events.types == ["transfer.created"]
    assert sim.retrieve_transfer(result.id) == result
    assert sim.list_transfers(transfer_group="task_1") == [result]


def test_transfers_cannot_exceed_the_source_charge(sim: SimulatedGateway) -> None:
    account = new_account(sim)
    charge = paid_intent(sim).latest_charge or ""
    transfer(sim, account, charge, 6000)
    with pytest.raises(BalanceInsufficient) as exc_info:
        transfer(sim, account, charge, 4001)
    assert exc_info.value.code == "balance_insufficient"
    assert transfer(sim, account, charge, 4000).amount == 4000


def test_transfer_needs_a_charge_id_not_a_payment_intent(sim: SimulatedGateway) -> None:
    account = new_account(sim)
    intent = paid_intent(sim)
    with pytest.raises(ResourceMissing) as exc_info:
        transfer(sim, account, intent.id, 1000)
    assert exc_info.value.param == "source_transaction"


def test_transfer_needs_an_active_transfers_capability(sim: SimulatedGateway) -> None:
    account = new_account(sim, ready=False)
    charge = paid_intent(sim).latest_charge or ""
    with pytest.raises(InvalidRequest) as exc_info:
        transfer(sim, account, charge, 1000)
    assert exc_info.value.code == "insufficient_capabilities_for_transfer"
    with pytest.raises(ResourceMissing):
        transfer(sim, "acct_missing", charge, 1000)


def test_transfer_from_an_uncaptured_charge_fails(sim: SimulatedGateway) -> None:
    account = new_account(sim)
    charge = paid_intent(sim, capture_method="manual").latest_charge or ""
    with pytest.raises(InvalidRequest):
        transfer(sim, account, charge, 1000)


def test_reversal_limits(sim: SimulatedGateway, events: EventCollector) -> None:
    account = new_account(sim)
    made = transfer(sim, account, paid_intent(sim).latest_charge or "", 9000)
    events.clear()
    reversal = sim.create_transfer_reversal(
        transfer_id=made.id, idempotency_key=key(), amount=4000, metadata={}
    )
    assert reversal.id.startswith("trr_")
    assert reversal.transfer == made.id
    assert events.types == ["transfer.reversed"]
    assert TransferSnapshot.from_dict(events.events[0]["data"]["object"]).amount_reversed == 4000
    with pytest.raises(InvalidRequest) as exc_info:
        sim.create_transfer_reversal(
            transfer_id=made.id, idempotency_key=key(), amount=5001, metadata={}
        )
    assert exc_info.value.code == "amount_too_large"
    rest = sim.create_transfer_reversal(
        transfer_id=made.id, idempotency_key=key(), amount=None, metadata={}
    )
    assert rest.amount == 5000
    after = sim.retrieve_transfer(made.id)
    assert after.reversed
    assert after.amount_reversed == 9000
    with pytest.raises(InvalidRequest):
        sim.create_transfer_reversal(
            transfer_id=made.id, idempotency_key=key(), amount=None, metadata={}
        )


def test_reversal_needs_the_connected_balance(sim: SimulatedGateway) -> None:
    account = new_account(sim)
    made = transfer(sim, account, paid_intent(sim).latest_charge or "", 9000)
    payout = sim.create_payout(account, 6000)
    assert payout.status == "paid"
    with pytest.raises(BalanceInsufficient):
        sim.create_transfer_reversal(
            transfer_id=made.id, idempotency_key=key(), amount=3001, metadata={}
        )
    sim.create_transfer_reversal(
        transfer_id=made.id, idempotency_key=key(), amount=3000, metadata={}
    )


def test_payout_events_are_connect_events(sim: SimulatedGateway, events: EventCollector) -> None:
    account = new_account(sim)
    transfer(sim, account, paid_intent(sim).latest_charge or "", 5000)
    events.clear()
    failed = sim.create_payout(account, fail=True)
    assert failed.status == "failed"
    assert failed.failure_code == "account_closed"
    assert events.types == ["payout.created", "payout.failed"]
    assert {d.endpoint for d in events.deliveries} == {CONNECT_ENDPOINT}
    assert sim.create_payout(account).amount == 5000  # a failed payout returns the money


# --- refunds --------------------------------------------------------------------------------


def refund(sim: SimulatedGateway, intent: str, amount: int | None, **kwargs: Any) -> RefundSnapshot:
    return sim.create_refund(
        idempotency_key=key(), payment_intent=intent, amount=amount, metadata={}, **kwargs
    )


def test_refund_limits(sim: SimulatedGateway, events: EventCollector) -> None:
    intent = paid_intent(sim)
    events.clear()
    first = refund(sim, intent.id, 3000, reason="requested_by_customer")
    assert first.id.startswith("re_")
    assert first.status == "succeeded"
    assert first.charge == intent.latest_charge
    assert first.payment_intent == intent.id
    assert first.reason == "requested_by_customer"
    assert events.types == ["refund.created", "charge.refunded"]
    charge = ChargeSnapshot.from_dict(events.of_type("charge.refunded")[0]["data"]["object"])
    assert charge.amount_refunded == 3000
    assert not charge.refunded

    with pytest.raises(InvalidRequest) as exc_info:
        refund(sim, intent.id, 7001)
    assert exc_info.value.code == "amount_too_large"
    assert exc_info.value.param == "amount"
    second = refund(sim, intent.id, None)
    assert second.amount == 7000
    assert sim.retrieve_charge(intent.latest_charge or "").refunded
    with pytest.raises(InvalidRequest) as exc_info:
        refund(sim, intent.id, 1)
    assert exc_info.value.code == "charge_already_refunded"
    assert [r.id for r in sim.list_refunds(payment_intent=intent.id)] == [second.id, first.id]
    assert sim.retrieve_refund(first.id) == first


def test_refund_of_an_uncaptured_payment_is_refused(sim: SimulatedGateway) -> None:
    intent = paid_intent(sim, capture_method="manual")
    with pytest.raises(InvalidRequest) as exc_info:
        refund(sim, intent.id, None)
    assert exc_info.value.code == "payment_intent_unexpected_state"


def test_refund_limits_transfers_from_the_charge(sim: SimulatedGateway) -> None:
    account = new_account(sim)
    charge = paid_intent(sim).latest_charge or ""
    intent_id = sim.retrieve_charge(charge).payment_intent or ""
    refund(sim, intent_id, 4000)
    with pytest.raises(BalanceInsufficient):
        transfer(sim, account, charge, 6001)


def test_destination_refund_reverses_the_transfer_and_fee_proportionally(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    account = new_account(sim)
    intent = paid_intent(sim, destination=account, fee=1000, group="task_5")
    (made,) = sim.list_transfers(transfer_group="task_5")
    assert made.amount == 10000
    assert store.balances[account]["usd"] == 9000
    events.clear()
    half = refund(sim, intent.id, 5000, reverse_transfer=True, refund_application_fee=True)
    assert events.types == [
        "refund.created",
        "charge.refunded",
        "transfer.reversed",
        "application_fee.refunded",
    ]
    # Half the 10,000 transfer reversed, half the 1,000 fee given back: the
    # connected account keeps 4,500.
    assert sim.retrieve_transfer(made.id).amount_reversed == 5000
    reversal_id = store.refunds[half.id]["transfer_reversal"]
    assert store.reversals[reversal_id]["source_refund"] == half.id
    (fee,) = store.application_fees.values()
    assert fee["amount_refunded"] == 500
    assert events.events[-1]["data"]["object"]["amount_refunded"] == 500
    assert store.balances[account]["usd"] == 4500

    refund(sim, intent.id, None, reverse_transfer=True, refund_application_fee=True)
    after = sim.retrieve_transfer(made.id)
    assert after.reversed
    assert after.amount_reversed == 10000
    assert fee["amount_refunded"] == 1000
    assert store.balances[account]["usd"] == 0


def test_a_destination_refund_without_the_fee_leaves_the_fee_with_the_platform(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    account = new_account(sim)
    intent = paid_intent(sim, destination=account, fee=1000, group="task_6")
    events.clear()
    refund(sim, intent.id, 5000, reverse_transfer=True)
    assert "application_fee.refunded" not in events.types
    (fee,) = store.application_fees.values()
    assert fee["amount_refunded"] == 0
    assert store.balances[account]["usd"] == 4000


def test_reverse_transfer_needs_a_destination_charge(sim: SimulatedGateway) -> None:
    intent = paid_intent(sim)
    with pytest.raises(InvalidRequest) as exc_info:
        refund(sim, intent.id, None, reverse_transfer=True)
    assert exc_info.value.param == "reverse_transfer"


# --- events ---------------------------------------------------------------------------------


def test_every_event_is_a_full_stripe_event(sim: SimulatedGateway, events: EventCollector) -> None:
    account = new_account(sim)
    intent = paid_intent(sim, destination=account, fee=1000)
    refund(sim, intent.id, 2000, reverse_transfer=True)
    paid_intent(sim, "disputed")
    paid_intent(sim, "declined")
    sim.create_payout(account, 1000)
    assert len(events.deliveries) > 15
    for delivery in events.deliveries:
        event = delivery.event
        assert set(event) >= {
            "id", "object", "api_version", "created", "data", "livemode",
            "pending_webhooks", "request", "type",
        }  # fmt: skip
        assert event["id"].startswith("evt_")
        assert event["object"] == "event"
        assert event["api_version"] == conf.STRIPE_API_VERSION
        assert event["livemode"] is False
        assert event["data"]["object"]["livemode"] is False
        assert isinstance(event["created"], int)
        assert set(event["request"]) == {"id", "idempotency_key"}
        is_connect = event["type"].startswith(("account.", "capability.", "payout."))
        assert delivery.endpoint == (CONNECT_ENDPOINT if is_connect else PLATFORM_ENDPOINT)
        assert ("account" in event) == is_connect
        secret = CONNECT_SECRET if is_connect else PLATFORM_SECRET
        assert sim.verify_webhook(delivery.payload, delivery.signature, [secret], 300) == event
        snapshot = parse(event)
        if snapshot is not None:
            assert snapshot.id == event["data"]["object"]["id"]


def test_events_name_the_request_that_caused_them(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    sim.create_payment_intent(
        idempotency_key="pi-key",
        amount=5000,
        currency="usd",
        transfer_group="g",
        metadata={},
        capture_method="automatic",
    )
    request = events.events[0]["request"]
    assert request["idempotency_key"] == "pi-key"
    assert request["id"].startswith("req_")


def test_retrieve_and_list_events(sim: SimulatedGateway, events: EventCollector) -> None:
    start = int(time.time()) - 1
    account = new_account(sim)
    intent = paid_intent(sim)
    platform_ids = [e["id"] for e in events.events if "account" not in e]
    connect_ids = [e["id"] for e in events.events if "account" in e]

    assert sim.retrieve_event(platform_ids[0]) == events.events[len(connect_ids)]
    with pytest.raises(ResourceMissing):
        sim.retrieve_event(connect_ids[0])
    assert sim.retrieve_event(connect_ids[0], stripe_account=account)["type"] == "account.updated"

    listed = list(sim.list_events(created_gte=start))
    assert [e["id"] for e in listed] == platform_ids[::-1]
    succeeded = list(sim.list_events(created_gte=start, types=["payment_intent.succeeded"]))
    assert [e["data"]["object"]["id"] for e in succeeded] == [intent.id]
    assert list(sim.list_events(created_gte=int(time.time()) + 60)) == []
    connect = list(sim.list_events(created_gte=start, stripe_account=account))
    assert {e["type"] for e in connect} == {"account.updated", "capability.updated"}
    with pytest.raises(TypeError):
        sim.list_events(created_gte=start, types="charge.succeeded")


def test_resend_delivers_a_duplicate(sim: SimulatedGateway, events: EventCollector) -> None:
    new_intent(sim)
    (event,) = events.events
    assert sim.resend_event(event["id"])
    assert [e["id"] for e in events.events] == [event["id"], event["id"]]


def test_unsigned_secrets_fall_back_to_the_simulated_secret(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    with override_settings(ESCROW_CONNECT={"WEBHOOK_SECRETS": [], "CONNECT_WEBHOOK_SECRETS": []}):
        new_intent(sim)
    (delivery,) = events.deliveries
    assert sim.verify_webhook(delivery.payload, delivery.signature, [], 300)["id"]
    with pytest.raises(SignatureVerificationFailed):
        sim.verify_webhook(delivery.payload, delivery.signature, [PLATFORM_SECRET], 300)
    forged = sign_webhook_payload(delivery.payload, "whsec_other")
    with pytest.raises(SignatureVerificationFailed):
        sim.verify_webhook(delivery.payload, forged, [], 300)
    assert sign_webhook_payload(delivery.payload, SIMULATED_WEBHOOK_SECRET)


def test_a_failing_sink_leaves_events_undelivered(store: SimulatedStripe) -> None:
    attempts: list[str] = []

    def broken(endpoint: str, payload: bytes, signature: str) -> None:
        attempts.append(endpoint)
        raise RuntimeError("receiver down")

    previous = set_event_sink(broken)
    try:
        intent = new_intent(SimulatedGateway(store))  # the call itself succeeds
    finally:
        set_event_sink(previous)
    assert intent.status == "requires_payment_method"
    assert [u.reason for u in store.undelivered] == ["RuntimeError: receiver down"]

    collector = EventCollector()
    previous = set_event_sink(collector)
    try:
        assert store.deliver_undelivered() == 1
    finally:
        set_event_sink(previous)
    assert collector.types == ["payment_intent.created"]
    assert store.undelivered == []


def test_a_refusing_receiver_leaves_events_undelivered(store: SimulatedStripe) -> None:
    class Answer:
        status_code = 400
        reason = "bad signature"

    previous = set_event_sink(lambda endpoint, payload, signature: Answer())
    try:
        new_intent(SimulatedGateway(store))
    finally:
        set_event_sink(previous)
    assert [u.reason for u in store.undelivered] == ["HTTP 400: bad signature"]


@pytest.mark.django_db
def test_events_wait_for_the_transaction_to_commit(
    sim: SimulatedGateway, events: EventCollector, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        new_intent(sim)
        assert events.types == []
    assert len(callbacks) == 1
    assert events.types == ["payment_intent.created"]


@pytest.mark.django_db(transaction=True)
def test_events_of_a_rolled_back_transaction_are_not_delivered(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    def pay_then_fail() -> None:
        with transaction.atomic():
            new_intent(sim)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        pay_then_fail()
    assert events.types == []
    assert len(store.events) == 1  # still listed by the Events API


# --- signature verification ------------------------------------------------------------------

BODY = json.dumps({"id": "evt_1", "object": "event", "type": "charge.succeeded"}).encode()


def test_verify_accepts_any_of_the_secrets(sim: SimulatedGateway) -> None:
    header = sign_webhook_payload(BODY, "whsec_new")
    event = sim.verify_webhook(BODY, header, ["whsec_old", "whsec_new"], 300)
    assert event["id"] == "evt_1"


def test_signature_matches_stripes_own_verification() -> None:
    stripe = pytest.importorskip("stripe")
    header = sign_webhook_payload(BODY, "whsec_x")
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, "whsec_x", 300)
    stripe_header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), "whsec_x")
    assert SimulatedGateway().verify_webhook(BODY, stripe_header, ["whsec_x"], 300)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        pytest.param(lambda: None, "missing", id="none"),
        pytest.param(lambda: "", "missing", id="empty"),
        pytest.param(lambda: "garbage", "matches", id="garbage"),
        pytest.param(lambda: "t=notanumber,v1=abc", "matches", id="bad-timestamp"),
        pytest.param(
            lambda: sign_webhook_payload(BODY, "whsec_wrong"), "matches", id="wrong-secret"
        ),
        pytest.param(
            lambda: sign_webhook_payload(BODY, "whsec_x", timestamp=int(time.time()) - 301),
            "old",
            id="too-old",
        ),
    ],
)
def test_verify_rejects(
    sim: SimulatedGateway, header: Callable[[], str | None], message: str
) -> None:
    # Signed when the test runs, not when it is collected: under pytest-xdist
    # each worker collects on its own, and ids (or a signature's age) taken
    # from the clock at collection would differ between them.
    with pytest.raises(SignatureVerificationFailed, match=message):
        sim.verify_webhook(BODY, header(), ["whsec_x"], 300)


def test_verify_rejects_a_tampered_body(sim: SimulatedGateway) -> None:
    header = sign_webhook_payload(BODY, "whsec_x")
    with pytest.raises(SignatureVerificationFailed):
        sim.verify_webhook(BODY.replace(b"charge", b"chargf"), header, ["whsec_x"], 300)


@pytest.mark.parametrize("body", [b"\xff\xfe", b"not json", b"[1, 2]", b'{"id": "evt_1"}'])
def test_verify_rejects_bodies_that_are_not_events(sim: SimulatedGateway, body: bytes) -> None:
    with pytest.raises(InvalidWebhookPayload):
        sim.verify_webhook(body, sign_webhook_payload(body, "whsec_x"), ["whsec_x"], 300)


def test_verify_needs_a_positive_tolerance(sim: SimulatedGateway) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        sim.verify_webhook(BODY, sign_webhook_payload(BODY, "whsec_x"), ["whsec_x"], 0)


# --- fault injection and the call log ---------------------------------------------------------


def test_failure_before_the_effect(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    store.fail_next("create_payment_intent", TemporarilyUnavailable("timeout"))
    kwargs: dict[str, Any] = {
        "idempotency_key": "k1",
        "amount": 5000,
        "currency": "usd",
        "transfer_group": "g",
        "metadata": {},
        "capture_method": "automatic",
    }
    with pytest.raises(TemporarilyUnavailable):
        sim.create_payment_intent(**kwargs)
    assert store.payment_intents == {}
    assert events.types == []
    intent = sim.create_payment_intent(**kwargs)
    assert list(store.payment_intents) == [intent.id]
    assert store.call_count("create_payment_intent") == 2


def test_failure_after_the_effect_replays_on_retry(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    account = new_account(sim)
    charge = paid_intent(sim).latest_charge or ""
    events.clear()
    store.fail_next("create_transfer", TemporarilyUnavailable("read timeout"), after_effect=True)
    kwargs: dict[str, Any] = {
        "idempotency_key": "release-task-1",
        "amount": 9000,
        "currency": "usd",
        "destination": account,
        "source_transaction": charge,
        "transfer_group": "task_1",
        "metadata": {},
    }
    with pytest.raises(TemporarilyUnavailable):
        sim.create_transfer(**kwargs)
    assert len(store.transfers) == 1  # Stripe acted before the connection dropped
    assert events.types == ["transfer.created"]
    retried = sim.create_transfer(**kwargs)
    assert list(store.transfers) == [retried.id]
    assert events.types == ["transfer.created"]


def test_failures_queue_per_method(sim: SimulatedGateway, store: SimulatedStripe) -> None:
    account = new_account(sim)
    store.fail_next("retrieve_account", TemporarilyUnavailable("1"))
    store.fail_next("retrieve_account", GatewayPermissionDenied("2"))
    with pytest.raises(TemporarilyUnavailable):
        sim.retrieve_account(account)
    with pytest.raises(GatewayPermissionDenied):
        sim.retrieve_account(account)
    assert sim.retrieve_account(account).id == account


def test_fail_next_checks_its_arguments(store: SimulatedStripe) -> None:
    with pytest.raises(ValueError, match="not a method"):
        store.fail_next("create_charge", TemporarilyUnavailable())
    with pytest.raises(TypeError):
        store.fail_next("create_transfer", RuntimeError("x"))  # type: ignore[arg-type]


def test_simulated_customer_actions_can_fail_too(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    intent = new_intent(sim)
    store.fail_next("confirm_payment_intent", TemporarilyUnavailable("network"))
    with pytest.raises(TemporarilyUnavailable):
        sim.confirm_payment_intent(intent.id, "success")
    assert sim.confirm_payment_intent(intent.id, "success").status == "succeeded"


def test_the_call_log_records_gateway_calls_only(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    account = new_account(sim)  # create_account + complete_onboarding (not a call)
    intent = paid_intent(sim)  # create_payment_intent + customer confirmation (not a call)
    sim.retrieve_payment_intent(intent.id)
    assert [name for name, _ in store.calls] == [
        "create_account",
        "create_payment_intent",
        "retrieve_payment_intent",
    ]
    _name, kwargs = store.calls[0]
    assert kwargs["country"] == "US"
    assert kwargs["metadata"] == {"owner": "1"}
    assert kwargs["idempotency_key"].startswith("test-key-")
    assert store.call_count() == 3
    assert account

    store.reset()
    assert store.calls == []
    assert store.accounts == {}


# --- service agreements, capabilities and regions ----------------------------------


def account_in(
    sim: SimulatedGateway,
    country: str,
    *,
    agreement: Any = None,
    capabilities: tuple[str, ...] = ("transfers", "card_payments"),
) -> str:
    account = sim.create_account(
        idempotency_key=key(),
        country=country,
        email=None,
        business_type="individual",
        metadata={},
        capabilities=capabilities,
        service_agreement=agreement,
    )
    sim.complete_onboarding(account.id)
    return account.id


def test_an_account_requests_the_capabilities_asked_for(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    account = sim.create_account(
        idempotency_key=key(),
        country="US",
        email=None,
        business_type=None,
        metadata={},
        capabilities=("transfers",),
        service_agreement="recipient",
    )
    assert account.capabilities == {"transfers": "inactive"}
    assert store.accounts[account.id]["tos_acceptance"]["service_agreement"] == "recipient"
    assert store.accounts[new_account(sim)]["tos_acceptance"]["service_agreement"] == "full"


def test_a_recipient_account_cannot_request_card_payments(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    with pytest.raises(InvalidRequest) as exc_info:
        sim.create_account(
            idempotency_key=key(),
            country="US",
            email=None,
            business_type=None,
            metadata={},
            capabilities=("transfers", "card_payments"),
            service_agreement="recipient",
        )
    assert exc_info.value.param == "tos_acceptance[service_agreement]"
    assert store.accounts == {}


def test_another_service_agreement_with_the_same_key_is_a_conflict(sim: SimulatedGateway) -> None:
    kwargs: dict[str, Any] = {
        "idempotency_key": "acct-agreement",
        "country": "US",
        "email": None,
        "business_type": None,
        "metadata": {},
        "capabilities": ("transfers",),
    }
    sim.create_account(**kwargs, service_agreement="recipient")
    with pytest.raises(IdempotencyConflict):
        sim.create_account(**kwargs, service_agreement="full")


@pytest.mark.parametrize("bad", ["transfers", (), ("transfers", "")])
def test_capabilities_must_name_capabilities(sim: SimulatedGateway, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        sim.create_account(
            idempotency_key=key(),
            country="US",
            email=None,
            business_type=None,
            metadata={},
            capabilities=bad,
        )


def test_transfers_across_regions_need_a_recipient_account(sim: SimulatedGateway) -> None:
    full = account_in(sim, "GB")
    recipient = account_in(sim, "GB", agreement="recipient", capabilities=("transfers",))
    charge = paid_intent(sim).latest_charge or ""

    with pytest.raises(InvalidRequest) as exc_info:
        transfer(sim, full, charge, 1000)
    assert exc_info.value.param == "destination"
    assert "recipient" in str(exc_info.value)

    assert transfer(sim, recipient, charge, 1000).destination == recipient


def test_europe_is_one_region(sim: SimulatedGateway, store: SimulatedStripe) -> None:
    store.platform_country = "DE"
    charge = paid_intent(sim).latest_charge or ""
    for country in ("FR", "GB", "CH"):
        assert transfer(sim, account_in(sim, country), charge, 1000).amount == 1000
    with pytest.raises(InvalidRequest):
        transfer(sim, account_in(sim, "US"), charge, 1000)


def test_destination_charges_across_regions_need_on_behalf_of(sim: SimulatedGateway) -> None:
    account = account_in(sim, "GB")
    with pytest.raises(InvalidRequest) as exc_info:
        new_intent(sim, capture_method="manual", destination=account, fee=100)
    assert exc_info.value.param == "transfer_data[destination]"
    assert "on_behalf_of" in str(exc_info.value)

    intent = sim.create_payment_intent(
        idempotency_key=key(),
        amount=10_000,
        currency="usd",
        transfer_group="task_1",
        metadata={},
        capture_method="manual",
        destination=account,
        application_fee_amount=100,
        on_behalf_of=account,
    )
    assert sim.retrieve_payment_intent(intent.id).id == intent.id
    held = sim.confirm_payment_intent(intent.id, CARDS["success"].number)
    captured = sim.capture_payment_intent(held.id, idempotency_key=key())
    assert captured.status == "succeeded"


@pytest.mark.parametrize(
    ("agreement", "capabilities"),
    [("recipient", ("transfers",)), ("full", ("transfers",))],
)
def test_on_behalf_of_needs_a_full_account_with_card_payments(
    sim: SimulatedGateway, agreement: str, capabilities: tuple[str, ...]
) -> None:
    account = account_in(sim, "US", agreement=agreement, capabilities=capabilities)
    with pytest.raises(InvalidRequest) as exc_info:
        sim.create_payment_intent(
            idempotency_key=key(),
            amount=10_000,
            currency="usd",
            transfer_group="task_1",
            metadata={},
            capture_method="manual",
            destination=account,
            on_behalf_of=account,
        )
    assert exc_info.value.param == "on_behalf_of"


# --- stricter, like Stripe: balances ------------------------------------------------------


def test_card_money_is_pending_until_it_settles(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    paid_intent(sim)
    assert store.platform_balance("usd") == {"available": 0, "pending": 10_000}
    store.advance_time(2 * DAY - 60)
    assert store.platform_balance("usd") == {"available": 0, "pending": 10_000}
    store.advance_time(60)
    assert store.platform_balance("USD") == {"available": 10_000, "pending": 0}


def test_a_transfer_without_source_transaction_needs_the_available_balance(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    account = new_account(sim)
    paid_intent(sim)
    kwargs: dict[str, Any] = {
        "amount": 9000,
        "currency": "usd",
        "destination": account,
        "source_transaction": None,
        "transfer_group": "task_1",
        "metadata": {},
    }
    with pytest.raises(BalanceInsufficient) as refused:
        sim.create_transfer(idempotency_key=key(), **kwargs)
    assert (refused.value.code, refused.value.http_status) == ("balance_insufficient", 400)
    store.make_funds_available()
    transfer = sim.create_transfer(idempotency_key=key(), **kwargs)
    assert transfer.source_transaction is None
    assert store.platform_balance("usd") == {"available": 1_000, "pending": 0}
    with pytest.raises(BalanceInsufficient):
        sim.create_transfer(idempotency_key=key(), **{**kwargs, "amount": 1_001})


def test_a_transfer_from_its_source_charge_may_use_pending_money(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    account = new_account(sim)
    charge = paid_intent(sim).latest_charge or ""
    sim.create_transfer(
        idempotency_key=key(),
        amount=9000,
        currency="usd",
        destination=account,
        source_transaction=charge,
        transfer_group="task_1",
        metadata={},
    )
    assert store.platform_balance("usd") == {"available": 0, "pending": 1_000}


def test_a_chargeback_takes_the_amount_and_the_fee_from_the_available_balance(
    sim: SimulatedGateway, store: SimulatedStripe
) -> None:
    intent = paid_intent(sim)
    store.make_funds_available()
    dispute = sim.open_dispute(intent.id)
    assert store.platform_balance("usd")["available"] == -simulated.DISPUTE_FEE
    sim.close_dispute(dispute.id, won=True)  # the amount comes back, the fee does not
    assert store.platform_balance("usd")["available"] == 10_000 - simulated.DISPUTE_FEE


# --- stricter, like Stripe: refunds settle later --------------------------------------------


def test_a_refund_of_the_pending_refund_card_is_pending_until_settled(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    intent = paid_intent(sim, "refund_pending")
    refund = sim.create_refund(
        idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={}
    )
    assert refund.status == "pending"
    assert store.refunds[refund.id]["pending_reason"] == "processing"
    assert store.charges[intent.latest_charge or ""]["amount_refunded"] == 10_000
    events.clear()

    settled = sim.settle_refund(refund.id)

    assert settled.status == "succeeded"
    assert events.types == ["refund.updated", "charge.refund.updated"]
    updated = events.of_type("refund.updated")[0]
    assert updated["data"]["previous_attributes"]["status"] == "pending"
    assert updated["request"] == {"id": None, "idempotency_key": None}
    with pytest.raises(InvalidRequest):
        sim.settle_refund(refund.id)


def test_a_refund_of_the_refund_fails_card_succeeds_then_fails(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    intent = paid_intent(sim, "refund_fails")
    charge_id = intent.latest_charge or ""
    refund = sim.create_refund(
        idempotency_key=key(), payment_intent=intent.id, amount=4_000, metadata={}
    )
    assert refund.status == "succeeded"
    assert store.platform_balance("usd")["pending"] == 6_000
    events.clear()

    assert sim.settle_refunds() == 1

    failed = sim.retrieve_refund(refund.id)
    assert (failed.status, failed.failure_reason) == ("failed", "expired_or_canceled_card")
    assert store.refunds[refund.id]["failure_balance_transaction"].startswith("txn_")
    assert events.types == ["refund.failed", "charge.refund.updated"]
    assert parse(events.of_type("refund.failed")[0]).status == "failed"
    charge = store.charges[charge_id]
    assert (charge["amount_refunded"], charge["refunded"]) == (0, False)
    # The money comes back to the platform (available: the refund had taken it).
    balance = store.platform_balance("usd")
    assert balance["available"] + balance["pending"] == 10_000
    assert sim.settle_refunds() == 0


def test_other_cards_refund_at_once_and_can_still_be_failed(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    intent = paid_intent(sim)
    refund = sim.create_refund(
        idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={}
    )
    assert refund.status == "succeeded"
    assert sim.settle_refunds() == 0
    with pytest.raises(InvalidRequest):
        sim.settle_refund(refund.id)  # already succeeded, and nothing planned
    assert sim.settle_refund(refund.id, succeed=False).status == "failed"


# --- stricter, like Stripe: inquiries and chargebacks ---------------------------------------


def test_an_inquiry_withdraws_nothing_and_a_refund_closes_it(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    intent = paid_intent(sim)
    events.clear()
    inquiry = sim.open_dispute(intent.id, inquiry=True)
    assert inquiry.status == "warning_needs_response"
    assert events.types == ["charge.dispute.created"]
    assert store.platform_balance("usd")["pending"] == 10_000

    sim.create_refund(idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={})

    assert sim.retrieve_dispute(inquiry.id).status == "warning_closed"
    assert events.types[-1] == "charge.dispute.closed"


def test_a_chargeback_blocks_refunds(sim: SimulatedGateway) -> None:
    intent = paid_intent(sim)
    dispute = sim.open_dispute(intent.id)
    with pytest.raises(InvalidRequest) as refused:
        sim.create_refund(idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={})
    assert refused.value.code == "charge_disputed"
    sim.close_dispute(dispute.id, won=True)
    assert (
        sim.create_refund(
            idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={}
        ).amount
        == 10_000
    )


def test_an_inquiry_can_escalate_to_a_chargeback(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    intent = paid_intent(sim)
    inquiry = sim.open_dispute(intent.id, inquiry=True)
    events.clear()
    chargeback = sim.close_dispute(inquiry.id, won=False)
    assert chargeback.status == "needs_response"
    assert events.types == ["charge.dispute.updated", "charge.dispute.funds_withdrawn"]
    with pytest.raises(InvalidRequest, match="charged back"):
        sim.create_refund(idempotency_key=key(), payment_intent=intent.id, amount=None, metadata={})


# --- stricter, like Stripe: controller properties ------------------------------------------


def test_accounts_keep_the_controller_they_were_created_with(sim: SimulatedGateway) -> None:
    package = sim.store.accounts[new_account(sim, ready=False)]
    assert package["type"] == "express"
    assert package["controller"]["stripe_dashboard"] == {"type": "express"}
    assert package["controller"]["requirement_collection"] == "stripe"

    custom = sim.create_account(
        idempotency_key=key(),
        country="US",
        email=None,
        business_type="individual",
        metadata={},
        controller={
            "fees": {"payer": "application"},
            "losses": {"payments": "application"},
            "requirement_collection": "application",
            "stripe_dashboard": {"type": "none"},
        },
    )
    stored = sim.store.accounts[custom.id]
    assert stored["type"] == "custom"
    assert stored["controller"]["stripe_dashboard"] == {"type": "none"}


def test_login_links_only_for_express_dashboard_accounts(sim: SimulatedGateway) -> None:
    account = sim.create_account(
        idempotency_key=key(),
        country="US",
        email=None,
        business_type="individual",
        metadata={},
        controller={
            "fees": {"payer": "application"},
            "losses": {"payments": "application"},
            "requirement_collection": "application",
            "stripe_dashboard": {"type": "none"},
        },
    ).id
    sim.complete_onboarding(account)
    with pytest.raises(InvalidRequest, match="Express Dashboard") as refused:
        sim.create_login_link(account_id=account)
    assert refused.value.param == "account"
    # The platform collects requirements: it may send the seller to update them.
    link = sim.create_account_link(
        account_id=account,
        link_type="account_update",
        refresh_url="https://example.com/r",
        return_url="https://example.com/b",
    )
    assert link.url


@pytest.mark.parametrize(
    ("controller", "param"),
    [
        (
            {"requirement_collection": "application", "stripe_dashboard": {"type": "express"}},
            "controller[requirement_collection]",
        ),
        ({"stripe_dashboard": {"type": "fancy"}}, "controller[stripe_dashboard][type]"),
        ({"fees": {"owner": "application"}}, "controller[fees][owner]"),
    ],
)
def test_controller_properties_stripe_refuses(
    sim: SimulatedGateway, controller: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        sim.create_account(
            idempotency_key="owner-1",
            country="US",
            email=None,
            business_type=None,
            metadata={},
            controller=controller,
        )
    assert refused.value.param == param
    # Refused by validation: the key is not used up.
    sim.create_account(
        idempotency_key="owner-1", country="US", email=None, business_type=None, metadata={}
    )


# --- stricter, like Stripe: embedded components ------------------------------------------


def test_unknown_account_session_components_are_refused(sim: SimulatedGateway) -> None:
    account = new_account(sim, ready=False)
    with pytest.raises(InvalidRequest) as refused:
        sim.create_account_session(account_id=account, components=["account_onboarding", "wallet"])
    assert (refused.value.param, refused.value.http_status) == ("components[wallet]", 400)
    session = sim.create_account_session(
        account_id=account, components=["account_onboarding", "payouts", "notification_banner"]
    )
    assert session.client_secret


def test_the_component_names_are_the_pinned_api_versions() -> None:
    """The list matches stripe-python's typed parameters for the pinned version."""
    import typing

    import stripe
    from stripe.params._account_session_create_params import (
        AccountSessionCreateParamsComponents,
    )

    assert stripe.api_version == conf.STRIPE_API_VERSION
    names = set(typing.get_type_hints(AccountSessionCreateParamsComponents))
    assert names == simulated.ACCOUNT_SESSION_COMPONENTS


def test_the_packages_component_features_are_the_pinned_api_versions() -> None:
    """Each component's feature names match stripe-python's typed parameters."""
    import typing

    from stripe.params import _account_session_create_params as params

    from django_escrow_connect import embedded

    components = typing.get_type_hints(params.AccountSessionCreateParamsComponents)
    for name, features in embedded.COMPONENT_FEATURES.items():
        features_type = typing.get_type_hints(components[name])["features"]
        assert set(typing.get_type_hints(features_type)) == features, name
        assert set(embedded.DEFAULT_FEATURES[name]) <= features, name


# --- stricter, like Stripe: events at the endpoint's API version ----------------------------


def test_events_carry_the_pinned_version_by_default(
    sim: SimulatedGateway, events: EventCollector
) -> None:
    paid_intent(sim)
    assert {event["api_version"] for event in events.events} == {conf.STRIPE_API_VERSION}


def test_an_older_endpoint_gets_events_in_its_versions_shape(
    sim: SimulatedGateway, store: SimulatedStripe, events: EventCollector
) -> None:
    store.endpoint_api_versions[PLATFORM_ENDPOINT] = "2022-08-01"
    intent = paid_intent(sim)
    [succeeded] = events.of_type("payment_intent.succeeded")
    assert succeeded["api_version"] == "2022-08-01"
    rendered = succeeded["data"]["object"]
    assert "latest_charge" not in rendered
    assert [c["id"] for c in rendered["charges"]["data"]] == [intent.latest_charge]
    # The package's parser reads the older shape.
    assert PaymentIntentSnapshot.from_dict(rendered).latest_charge == intent.latest_charge
    # The Events API answers with the version the event was created at.
    assert sim.retrieve_event(succeeded["id"])["api_version"] == "2022-08-01"
    # The API itself answers at the pinned version.
    assert sim.retrieve_payment_intent(intent.id).latest_charge == intent.latest_charge


def test_the_endpoint_version_follows_webhook_api_version(
    sim: SimulatedGateway, events: EventCollector, settings: Any
) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_API_VERSION": "2025-03-31.basil"}
    new_intent(sim)
    assert events.events[0]["api_version"] == "2025-03-31.basil"
