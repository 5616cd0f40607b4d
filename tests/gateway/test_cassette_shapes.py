"""Every cassette describes an exchange Stripe could have had at API 2026-10-28.endive.

The cassettes are written by hand, so nothing but these checks stops one from
replaying a field Stripe does not send, a parameter it would refuse, or money
that does not add up. Each cassette in ``tests/cassettes/`` (gateway and
payments) is checked against

* stripe-python 16.1's typings for the pinned version: every response field
  is declared on its resource class (nested classes and expanded objects
  included) with a compatible JSON type, enum values and ``object`` names
  are ones the version knows, and every request parameter is declared in the
  call's ``stripe.params`` TypedDict (``tests/stripe_typings.py``);
* Stripe's facts (``tests/stripe_facts.py``): test mode, id prefixes, the
  pinned ``Stripe-Version`` and request ids, idempotency keys on money calls,
  replays (``Idempotent-Replayed: true``) that name an earlier request with
  the same key and body,
  account requirements that agree with each other and with the capabilities,
  amounts that add up, time that moves forward, and no dispute on a connected
  account (these charge types keep charges and disputes on the platform).

The negative cases prove each check can fail.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stripe_facts import API_VERSION, Exchange, cassette_problems, load_cassette
from tests.stripe_typings import form_tree, request_problems, response_problems

CASSETTES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cassettes")
ALL = sorted(glob.glob(os.path.join(CASSETTES, "*", "*.yaml")))


def name(path: str) -> str:
    return os.path.relpath(path, CASSETTES)[: -len(".yaml")]


def typing_problems(path: str) -> list[str]:
    problems = []
    for exchange in load_cassette(path):
        where = f"#{exchange.index} {exchange.method} {exchange.path}"
        found = request_problems(exchange.method, exchange.path, exchange.params)
        if exchange.response is not None:
            found += response_problems(exchange.response)
        problems += [f"{where}: {p}" for p in found]
    return problems


def test_every_cassette_is_checked():
    assert len(ALL) >= 40
    assert {os.path.basename(os.path.dirname(p)) for p in ALL} == {"gateway", "payments"}


@pytest.mark.parametrize("path", ALL, ids=name)
def test_each_exchange_fits_stripe_python_typings(path):
    assert typing_problems(path) == []


@pytest.mark.parametrize("path", ALL, ids=name)
def test_each_exchange_keeps_stripe_s_facts(path):
    assert cassette_problems(load_cassette(path)) == []


@pytest.mark.parametrize("path", ALL, ids=name)
def test_each_cassette_says_it_was_authored(path):
    # Re-recorded cassettes lose the line and move to "Recorded" in the README.
    with open(path, encoding="utf-8") as handle:
        assert handle.readline().startswith("# AUTHORED by hand (not recorded)")


# --- the typing check can fail -----------------------------------------------------


class TestResponsesAgainstTypings:
    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (
                {"object": "charge", "id": "ch_1", "dispute": None},
                "$.dispute: not a field of Charge",
            ),
            (
                {"object": "account", "requirements": {"currently_due": [], "deadline": None}},
                "$.requirements.deadline: not a field of Account.Requirements",
            ),
            ({"object": "transfer", "amount": "11250"}, "$.amount: an int expected, not str"),
            ({"object": "transfer", "reversed": None}, "$.reversed: a bool expected, not null"),
            (
                {"object": "payment_intent", "capture_method": "automatic_sync"},
                "$.capture_method: 'automatic_sync' is not one of",
            ),
            (
                {"object": "payment_intent", "latest_charge": {"object": "refund", "id": "re_1"}},
                "$.latest_charge.object: one of ['charge'] expected, not 'refund'",
            ),
            ({"object": "paymentintent"}, "$.object: 'paymentintent' is not an object"),
            (
                {
                    "object": "transfer",
                    "reversals": {"object": "list", "data": [], "total_count": 0},
                },
                "$.reversals: a list object has no fields ['total_count']",
            ),
            (
                {"object": "event", "data": {"object": {"object": "payout", "paid": True}}},
                "$.data.object.paid: not a field of Payout",
            ),
            ({"error": {"type": "api_error", "retry": True}}, "$.error.retry: not a field"),
        ],
    )
    def test_a_body_stripe_could_not_send_is_a_problem(self, body, problem):
        problems = response_problems(body)
        assert any(p.startswith(problem) for p in problems), problems

    def test_a_body_that_fits_has_no_problem(self):
        body = {
            "object": "transfer",
            "id": "tr_1",
            "amount": 100,
            "reversals": {"object": "list", "data": [], "has_more": False, "url": "/v1/x"},
            "metadata": {"escrow_payment_id": "1"},
            "destination_payment": None,
        }
        assert response_problems(body) == []


class TestRequestsAgainstParams:
    @pytest.mark.parametrize(
        ("method", "path", "params", "problem"),
        [
            (
                "POST",
                "/v1/payment_intents",
                "amount=1&currency=usd&payment_method_types[0]=card",
                "params[payment_method_types]: not a parameter of PaymentIntentCreateParams",
            ),
            (
                "POST",
                "/v1/payment_intents",
                "amount=1&currency=usd&transfer_data[account]=acct_1",
                "params[transfer_data][account]: not a parameter",
            ),
            (
                "POST",
                "/v1/payment_intents",
                "amount=1&currency=usd&capture_method=automatic_sync",
                "params[capture_method]: 'automatic_sync' is not one of",
            ),
            (
                "POST",
                "/v1/transfers",
                "amount=1&currency=usd&destination=acct_1&idempotency_key=k",
                "params[idempotency_key]: not a parameter",  # a header, never a parameter
            ),
            ("POST", "/v1/refunds", "amount=ten", "params[amount]: an int expected"),
            ("GET", "/v1/charges", "limit=1", "GET /v1/charges: no params TypedDict mapped"),
        ],
    )
    def test_a_parameter_stripe_would_refuse_is_a_problem(self, method, path, params, problem):
        problems = request_problems(method, path, params)
        assert any(p.startswith(problem) for p in problems), problems

    def test_nested_and_listed_parameters_are_read_back(self):
        assert form_tree("a[b][c]=1&types[0]=x&types[1]=y&expand[]=z") == {
            "a": {"b": {"c": "1"}},
            "types": ["x", "y"],
            "expand": ["z"],
        }


def test_a_wrong_field_in_a_copy_of_a_real_cassette_fails(tmp_path: Path):
    """The check runs on the files, not on a parsed copy of them that could differ."""
    original = os.path.join(CASSETTES, "gateway", "payment_intents_retrieve_expanded.yaml")
    copy = tmp_path / "copy.yaml"
    shutil.copy(original, copy)
    assert typing_problems(str(copy)) == []

    data = yaml.safe_load(copy.read_text())
    response = data["interactions"][0]["response"]["body"]
    body = json.loads(response["string"])
    body["latest_charge"]["destination"] = "acct_1QzR8tQm5HwJ3uVe"  # gone from Charge
    response["string"] = json.dumps(body)
    copy.write_text(yaml.safe_dump(data))

    assert typing_problems(str(copy)) == [
        "#0 GET /v1/payment_intents/pi_3QzSdKPk9xR2vLq71Fq8ZsWb: "
        "$.latest_charge.destination: not a field of Charge"
    ]


# --- the facts check can fail --------------------------------------------------------


def exchange(
    body: Any,
    *,
    method: str = "GET",
    path: str = "/v1/accounts/acct_1",
    request_headers: dict[str, str] | None = None,
    response_headers: dict[str, str] | None = None,
) -> Exchange:
    return Exchange(
        index=0,
        method=method,
        path=path,
        query="",
        body="",
        request_headers={"Stripe-Version": API_VERSION, **(request_headers or {})},
        status=200,
        response_headers={
            "Stripe-Version": API_VERSION,
            "Request-Id": "req_Ab3Cd4Ef5Gh6Ij",
            "Date": "Mon, 02 Nov 2026 09:14:05 GMT",
            **(response_headers or {}),
        },
        response=body,
    )


def account(**requirements: Any) -> dict[str, Any]:
    base = {
        "currently_due": [],
        "eventually_due": [],
        "past_due": [],
        "disabled_reason": None,
        "current_deadline": None,
    }
    return {
        "id": "acct_1",
        "object": "account",
        "capabilities": {"transfers": "inactive"},
        "charges_enabled": False,
        "payouts_enabled": False,
        "requirements": {**base, **requirements},
        "future_requirements": dict(base),
    }


class TestFacts:
    def test_a_consistent_account_has_no_problem(self):
        due = ["external_account"]
        body = account(
            currently_due=due,
            eventually_due=due,
            past_due=due,
            disabled_reason="requirements.past_due",
        )
        assert cassette_problems([exchange(body)]) == []

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (account(currently_due=["x"]), "currently_due ['x'] not in eventually_due"),
            (
                account(currently_due=["x"], eventually_due=["x"], past_due=["y"]),
                "past_due ['y'] not in currently_due",
            ),
            (
                account(disabled_reason="requirements.past_due"),
                "disabled_reason requirements.past_due with nothing past due",
            ),
            (
                account(disabled_reason="requirements.pending_verification"),
                "disabled_reason requirements.pending_verification while nothing is due",
            ),
            (
                {k: v for k, v in account().items() if k != "future_requirements"},
                "an account with requirements always has future_requirements",
            ),
            (
                {
                    **account(
                        currently_due=["x"],
                        eventually_due=["x"],
                        past_due=["x"],
                        disabled_reason="requirements.past_due",
                    ),
                    "capabilities": {"transfers": "active"},
                },
                "capabilities ['transfers'] active while requirements are past due",
            ),
            (
                {**account(), "charges_enabled": True},
                "charges_enabled without an active card_payments capability",
            ),
            ({"id": "pi_1", "object": "transfer"}, "a transfer id starts with tr_"),
            (
                {"id": "tr_1", "object": "transfer", "source_transaction": "pi_1"},
                "source_transaction 'pi_1' should start with ch_",
            ),
            ({"id": "ch_1", "object": "charge", "livemode": True}, "$.livemode is True"),
            (
                {"id": "ch_1", "object": "charge", "created": 1893456000},
                "created 1893456000 is after the response's Date",
            ),
            (
                {
                    "id": "tr_1",
                    "object": "transfer",
                    "amount": 100,
                    "amount_reversed": 50,
                    "reversals": {"object": "list", "data": [], "has_more": False},
                },
                "amount_reversed 50 is not 0",
            ),
        ],
    )
    def test_an_impossible_object_is_a_problem(self, body, problem):
        problems = cassette_problems([exchange(body)])
        assert any(problem in p for p in problems), problems

    def test_a_dispute_on_a_connected_account_is_a_problem(self):
        event = {
            "id": "evt_1",
            "object": "event",
            "type": "charge.dispute.created",
            "data": {"object": {"id": "dp_1", "object": "dispute", "charge": "ch_1"}},
        }
        connected = {"Stripe-Account": "acct_1"}
        problems = cassette_problems(
            [
                exchange(
                    event,
                    path="/v1/events/evt_1",
                    request_headers=connected,
                    response_headers=connected,
                )
            ]
        )
        assert any("(charge.dispute.created) on a connected account" in p for p in problems)
        assert any("dispute dp_1 on a connected account" in p for p in problems)
        # The same event on the platform is what Stripe sends.
        assert cassette_problems([exchange(event, path="/v1/events/evt_1")]) == []

    @pytest.mark.parametrize(
        ("request_headers", "response_headers", "problem"),
        [
            ({"Stripe-Version": "2025-03-31.basil"}, {}, "request Stripe-Version is"),
            ({}, {"Request-Id": "req_1"}, "Request-Id 'req_1' is not"),
            ({"Stripe-Account": "acct_1"}, {}, "does not echo the request's Stripe-Account"),
        ],
    )
    def test_wrong_headers_are_a_problem(self, request_headers, response_headers, problem):
        problems = cassette_problems(
            [exchange({}, request_headers=request_headers, response_headers=response_headers)]
        )
        assert any(problem in p for p in problems), problems

    def test_a_money_call_without_the_package_s_key_is_a_problem(self):
        sent = exchange({"id": "tr_1", "object": "transfer"}, method="POST", path="/v1/transfers")
        problems = cassette_problems([sent])
        assert any("without the package's Idempotency-Key" in p for p in problems), problems


# --- a replay names the request it replays ------------------------------------------

FIRST, REPLAY = "req_First01Xq7Tz0a", "req_Replay1Xq7Tz0b"
REPLAYED = {"Idempotent-Replayed": "true", "Original-Request": FIRST}


def transfer_post(
    index: int,
    request_id: str,
    *,
    body: str = "amount=9000&currency=usd",
    key: str = "escrow-connect:payment:1:transfer:0",
    **answered: str,
) -> Exchange:
    sent = exchange(
        {"id": "tr_1", "object": "transfer"},
        method="POST",
        path="/v1/transfers",
        request_headers={"Idempotency-Key": key},
        response_headers={
            "Idempotency-Key": key,
            "Request-Id": request_id,
            "Original-Request": request_id,
            **answered,
        },
    )
    return replace(sent, index=index, body=body)


class TestReplays:
    def test_a_replay_names_the_first_request_with_its_key_and_body(self):
        first = transfer_post(0, FIRST)
        # Stripe compares parameters, not their order.
        replay = transfer_post(1, REPLAY, body="currency=usd&amount=9000", **REPLAYED)
        assert cassette_problems([first, replay]) == []

    @pytest.mark.parametrize(
        "sent",
        [
            pytest.param(
                [
                    transfer_post(0, FIRST),
                    transfer_post(1, REPLAY, **{**REPLAYED, "Original-Request": REPLAY}),
                ],
                id="names-itself",
            ),
            pytest.param(
                [transfer_post(0, REPLAY, **REPLAYED), transfer_post(1, FIRST)],
                id="names-a-later-one",
            ),
            pytest.param([transfer_post(1, REPLAY, **REPLAYED)], id="names-none-in-the-cassette"),
            pytest.param(
                [transfer_post(0, FIRST, key="other"), transfer_post(1, REPLAY, **REPLAYED)],
                id="another-key",
            ),
            pytest.param(
                [
                    transfer_post(0, FIRST, body="amount=1&currency=usd"),
                    transfer_post(1, REPLAY, **REPLAYED),
                ],
                id="another-body",
            ),
            pytest.param(
                [
                    transfer_post(0, FIRST),
                    transfer_post(1, REPLAY, **REPLAYED),
                    transfer_post(
                        2, "req_Replay2Xq7Tz0c", **{**REPLAYED, "Original-Request": REPLAY}
                    ),
                ],
                id="names-an-earlier-replay",
            ),
        ],
    )
    def test_a_replay_of_no_earlier_request_is_a_problem(self, sent):
        problems = cassette_problems(sent)
        assert any(
            "a replay's Original-Request" in p and "is no earlier request" in p for p in problems
        ), problems

    def test_an_answer_not_marked_replayed_names_its_own_request(self):
        second = transfer_post(1, REPLAY, **{"Original-Request": FIRST})
        problems = cassette_problems([transfer_post(0, FIRST), second])
        assert any("a first execution's Original-Request is its own" in p for p in problems)
