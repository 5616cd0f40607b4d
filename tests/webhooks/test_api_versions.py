"""Events of another API version than the pinned one (issue 12, defect 6):
each is logged once as a warning, processed as far as its shape allows, and
an object that cannot be read is recorded as failed, answered 200."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from django_escrow_connect.conf import STRIPE_API_VERSION
from django_escrow_connect.gateway.types import AccountSnapshot, PaymentIntentSnapshot
from django_escrow_connect.webhooks import dispatch, pipeline
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import events, intent_for, status_history

pytestmark = pytest.mark.django_db

OLD_VERSION = "2022-08-01"
LOGGER = "django_escrow_connect.webhooks"


def version_warnings(caplog: Any) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER
        and r.levelno == logging.WARNING
        and getattr(r, "event_api_version", None) is not None
    ]


def test_an_event_of_another_version_is_warned_about_once(deliver: Any, caplog: Any) -> None:
    evt = dict(so.event("escrow_test.unhandled", so.charge()), api_version=OLD_VERSION)
    caplog.set_level(logging.INFO, logger=LOGGER)

    for _ in range(3):  # Stripe's duplicates
        assert deliver.platform(evt).status_code == 200

    [record] = version_warnings(caplog)
    assert record.event_api_version == OLD_VERSION
    assert record.expected_api_version == STRIPE_API_VERSION
    assert record.stripe_event_id == evt["id"]
    assert events().get().api_version == OLD_VERSION


def test_an_event_of_the_pinned_version_is_not_warned_about(deliver: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    deliver.platform(so.event("escrow_test.unhandled", so.charge()))
    assert version_warnings(caplog) == []


def test_a_queued_or_fetched_event_is_warned_about_when_first_processed(
    deliver: Any, caplog: Any
) -> None:
    """escrow_fetch_missed_events records, then processes: the same warning."""
    from django_escrow_connect.webhooks import receiver

    evt = dict(so.event("escrow_test.unhandled", so.charge()), api_version=OLD_VERSION)
    caplog.set_level(logging.INFO, logger=LOGGER)
    row = receiver.record("platform", evt)
    dispatch.dispatch_recorded(row)
    pipeline.replay(row.pk)

    assert len(version_warnings(caplog)) == 1


def test_an_object_that_cannot_be_read_is_recorded_failed_and_answered_200(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment()
    intent = intent_for(scene, "succeeded")
    del intent["currency"]  # a shape this version's parser cannot read
    evt = dict(so.event("payment_intent.succeeded", intent), api_version=OLD_VERSION)

    response = deliver.platform(evt)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    row = events().get()
    assert row.status == "failed"
    assert "PaymentIntentSnapshot" in row.last_error
    assert OLD_VERSION in row.last_error
    assert status_history(scene)[0] == "awaiting_payment"
    assert len(sent.of("webhook_processing_failed")) == 1


class TestParsersReadOtherShapes:
    def test_a_payment_intent_of_before_2022_11_15_finds_its_charge(self) -> None:
        charge = so.charge(id="ch_1Old")
        intent = so.payment_intent(status="succeeded")
        del intent["latest_charge"]
        intent["charges"] = {"object": "list", "data": [charge], "has_more": False}

        assert PaymentIntentSnapshot.from_dict(intent).latest_charge == "ch_1Old"

    def test_missing_or_odd_requirements_do_not_crash(self) -> None:
        account = so.account("acct_1Shape")
        del account["capabilities"]
        account["requirements"] = {"currently_due": None, "past_due": 3, "eventually_due": "x"}

        parsed = AccountSnapshot.from_dict(account)

        assert (parsed.currently_due, parsed.past_due, parsed.eventually_due) == ((), (), ())
        assert parsed.capabilities == {}

    def test_an_out_of_range_timestamp_is_a_clear_value_error(self) -> None:
        intent = so.payment_intent(created=10**20)
        with pytest.raises(ValueError, match="out of range"):
            PaymentIntentSnapshot.from_dict(intent)
