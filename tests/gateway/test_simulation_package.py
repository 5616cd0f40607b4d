"""The simulation package's own surface: saved state, the named event receiver,
links to its pages, and the deprecated ``gateway.simulated`` path."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from django_escrow_connect import simulation
from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable
from django_escrow_connect.simulation import (
    CARDS,
    EventCollector,
    SimulatedGateway,
    SimulatedStripe,
    set_event_sink,
)

DAY = 24 * 3600


@pytest.fixture
def events() -> Iterator[EventCollector]:
    collector = EventCollector()
    previous = set_event_sink(collector)
    yield collector
    set_event_sink(previous)


def account(sim: SimulatedGateway, key: str) -> str:
    created = sim.create_account(
        idempotency_key=key,
        country="US",
        email="seller@example.com",
        business_type="individual",
        metadata={},
    )
    sim.complete_onboarding(created.id)
    return created.id


def held_payment(sim: SimulatedGateway, key: str, card: str = "success") -> Any:
    intent = sim.create_payment_intent(
        idempotency_key=key,
        amount=10_000,
        currency="usd",
        transfer_group="task_1",
        metadata={},
        capture_method="manual",
    )
    return sim.confirm_payment_intent(intent.id, CARDS[card].number)


# --- saving and loading ---------------------------------------------------------------


def test_state_survives_a_json_round_trip_into_another_store(events: EventCollector) -> None:
    first = SimulatedGateway(SimulatedStripe())
    seller = account(first, "acct-key")
    intent = held_payment(first, "pi-key", card="disputed")
    first.store.advance_time(DAY)
    first.capture_payment_intent(idempotency_key="capture-key", payment_intent_id=intent.id)
    first.deauthorize(seller)
    first.store.fail_next("retrieve_charge", TemporarilyUnavailable("down"))

    data = json.loads(json.dumps(first.store.dump_state()))
    second = SimulatedGateway(SimulatedStripe())
    second.store.load_state(data)

    assert second.store.dump_state() == data
    assert second.store.now() == first.store.now()
    assert set(second.store.events) == set(first.store.events)
    assert seller in second.store.deauthorized
    # The same key and parameters replay the stored answer, not a second capture.
    again = second.capture_payment_intent(
        idempotency_key="capture-key", payment_intent_id=intent.id
    )
    assert again.status == "succeeded"
    assert second.store.call_count("capture_payment_intent") == 1
    # Faults and the call log belong to the process that set them.
    assert second.retrieve_charge(again.latest_charge).id == again.latest_charge


def test_a_stored_error_is_replayed_after_loading(events: EventCollector) -> None:
    first = SimulatedGateway(SimulatedStripe())
    intent = held_payment(first, "pi-key")
    refund = {"idempotency_key": "refund-key", "payment_intent": intent.id, "amount": None}
    with pytest.raises(InvalidRequest):  # still held: nothing captured to refund
        first.create_refund(**refund, metadata={})

    second = SimulatedGateway(SimulatedStripe())
    second.store.load_state(json.loads(json.dumps(first.store.dump_state())))
    second.capture_payment_intent(idempotency_key="capture-key", payment_intent_id=intent.id)
    # Refundable now, but the key answers with the error it first stored.
    with pytest.raises(InvalidRequest) as replayed:
        second.create_refund(**refund, metadata={})
    assert replayed.value.code == "payment_intent_unexpected_state"


def test_state_of_another_version_is_refused_and_changes_nothing(events: EventCollector) -> None:
    store = SimulatedStripe()
    account(SimulatedGateway(store), "acct-key")
    before = store.dump_state()
    with pytest.raises(ValueError, match="version"):
        store.load_state({**before, "version": 999})
    assert store.dump_state() == before


def test_module_level_dump_and_load_use_the_process_wide_store(events: EventCollector) -> None:
    simulation.reset()
    try:
        seller = account(SimulatedGateway(), "acct-key")
        saved = simulation.dump_state()
        simulation.reset()
        assert seller not in simulation.simulated_stripe.accounts
        simulation.load_state(saved)
        assert SimulatedGateway().retrieve_account(seller).id == seller
    finally:
        simulation.reset()


# --- the event receiver is named by a setting -------------------------------------------

received: list[tuple[str, dict[str, Any]]] = []


def recording_receiver(endpoint: str, payload: bytes, signature: str) -> object:
    """A receiver named by dotted path in the tests below."""
    received.append((endpoint, json.loads(payload)))
    return None


def test_events_go_to_the_receiver_the_setting_names(settings: Any) -> None:
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "SIMULATED_EVENT_RECEIVER": f"{__name__}.recording_receiver",
    }
    received.clear()
    store = SimulatedStripe()
    seller = account(SimulatedGateway(store), "acct-key")

    assert [event["type"] for _, event in received][:1] == ["account.updated"]
    assert {endpoint for endpoint, _ in received} == {"connect"}
    assert all(event["account"] == seller for _, event in received)
    assert store.undelivered == []


def test_an_unimportable_receiver_leaves_the_events_undelivered(settings: Any) -> None:
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "SIMULATED_EVENT_RECEIVER": "tests.nowhere.receive",
    }
    store = SimulatedStripe()
    account(SimulatedGateway(store), "acct-key")

    assert store.undelivered
    assert "tests.nowhere.receive" in store.undelivered[0].reason


# --- links to the pages ------------------------------------------------------------------


def test_links_name_the_pages_the_package_serves() -> None:
    assert simulation.onboarding_url("acct_1") == "/escrow/simulated/onboarding/acct_1/"
    assert simulation.dashboard_url("acct_1") == "/escrow/simulated/dashboard/acct_1/"


@pytest.mark.urls("tests.simulated_pages_elsewhere_urls")
def test_links_follow_where_the_host_mounts_the_pages(events: EventCollector) -> None:
    assert simulation.onboarding_url("acct_1") == "/stripe-sim/onboarding/acct_1/"
    assert simulation.dashboard_url("acct_1") == "/stripe-sim/dashboard/acct_1/"
    store = SimulatedStripe()
    intent = held_payment(SimulatedGateway(store), "pi-key", card="authentication_required")
    assert intent.status == "requires_action"
    next_action = store.payment_intents[intent.id]["next_action"]
    assert next_action["use_stripe_sdk"]["stripe_js"] == f"/stripe-sim/authenticate/{intent.id}/"


# --- the deprecated path -------------------------------------------------------------------


def test_the_old_module_path_still_works_and_says_it_is_deprecated() -> None:
    sys.modules.pop("django_escrow_connect.gateway.simulated", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("django_escrow_connect.gateway.simulated")
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert old.SimulatedGateway is SimulatedGateway
    assert old.simulated_stripe is simulation.simulated_stripe
    assert set(simulation.__all__) <= set(dir(old))
