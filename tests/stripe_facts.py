"""Facts every Stripe answer in a cassette must respect (API ``2026-10-28.endive``).

stripe-python's typings (``tests/stripe_typings.py``) say which fields exist;
they cannot say that a transfer's ``amount_reversed`` is the sum of its
reversals, that a requirement ``past_due`` is also ``currently_due``, or that
with separate charges and transfers (and destination charges) a dispute lives
on the platform, never on the connected account. A hand-authored cassette can
get any of these wrong and still replay. :func:`cassette_problems` lists the
impossibilities of one cassette (empty when there are none); it is run over
every cassette by ``tests/gateway/test_cassette_shapes.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = ["API_VERSION", "Exchange", "cassette_problems", "load_cassette"]

API_VERSION = "2026-10-28.endive"

#: Id prefixes by ``object``. A charge made by a transfer on the connected
#: account is a ``py_`` payment; its refund a ``pyr_``.
ID_PREFIXES: dict[str, tuple[str, ...]] = {
    "account": ("acct_",),
    "application": ("ca_",),
    "application_fee": ("fee_",),
    "balance_transaction": ("txn_",),
    "bank_account": ("ba_",),
    "card": ("card_",),
    "charge": ("ch_", "py_"),
    "customer": ("cus_",),
    "dispute": ("dp_", "du_"),
    "event": ("evt_",),
    "fee_refund": ("fr_",),
    "payment_intent": ("pi_",),
    "payment_method": ("pm_",),
    "payout": ("po_",),
    "refund": ("re_", "pyr_"),
    "transfer": ("tr_",),
    "transfer_reversal": ("trr_",),
}

#: Fields that hold the id of another object, and the prefixes it may have.
ID_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("payment_intent", "latest_charge"): ("ch_",),
    ("payment_intent", "customer"): ("cus_",),
    ("payment_intent", "payment_method"): ("pm_",),
    ("payment_method", "customer"): ("cus_",),
    ("charge", "payment_intent"): ("pi_",),
    ("charge", "balance_transaction"): ("txn_",),
    ("charge", "source_transfer"): ("tr_",),
    ("charge", "on_behalf_of"): ("acct_",),
    ("refund", "charge"): ("ch_", "py_"),
    ("refund", "payment_intent"): ("pi_",),
    ("refund", "balance_transaction"): ("txn_",),
    ("transfer", "destination"): ("acct_",),
    ("transfer", "destination_payment"): ("py_",),
    # A charge id (the PaymentIntent's latest_charge), never a PaymentIntent.
    ("transfer", "source_transaction"): ("ch_",),
    ("transfer", "balance_transaction"): ("txn_",),
    ("transfer_reversal", "transfer"): ("tr_",),
    ("transfer_reversal", "balance_transaction"): ("txn_",),
    ("dispute", "charge"): ("ch_",),
    ("dispute", "payment_intent"): ("pi_",),
    ("payout", "balance_transaction"): ("txn_",),
    ("payout", "destination"): ("ba_", "card_"),
    ("event", "account"): ("acct_",),
}

#: POSTs that move money or create an account: the package always passes its
#: own deterministic Idempotency-Key (links and sessions use the SDK's).
KEYED_POSTS = re.compile(
    r"/v1/(accounts|customers|payment_intents(/pi_\w+/(capture|cancel))?|transfers"
    r"(/tr_\w+/reversals)?|refunds)|/v2/core/accounts"
)
REQUEST_ID = re.compile(r"req_[A-Za-z0-9]{14}")


@dataclass
class Exchange:
    """One request and its answer, as a cassette stores them."""

    index: int
    method: str
    path: str
    query: str
    body: str
    request_headers: dict[str, str]
    status: int
    response_headers: dict[str, str]
    response: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def params(self) -> str:
        """The encoded parameters: the form body of a POST, else the query string."""
        return self.body if self.method == "POST" else self.query

    @property
    def date(self) -> int | None:
        value = self.response_headers.get("Date")
        return int(parsedate_to_datetime(value).timestamp()) if value else None


def _single(headers: dict[str, Any]) -> dict[str, str]:
    return {
        name: (value[0] if isinstance(value, list) else value) for name, value in headers.items()
    }


def load_cassette(path: str) -> list[Exchange]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    exchanges = []
    for index, interaction in enumerate(data["interactions"]):
        request, response = interaction["request"], interaction["response"]
        uri = urlsplit(request["uri"])
        body = request.get("body") or ""
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        text = response["body"].get("string") or ""
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = None
        exchanges.append(
            Exchange(
                index=index,
                method=request["method"],
                path=uri.path,
                query=uri.query,
                body=body,
                request_headers=_single(request.get("headers") or {}),
                status=response["status"]["code"],
                response_headers=_single(response.get("headers") or {}),
                response=parsed,
            )
        )
    return exchanges


def objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``value`` that names its ``object``, depth first."""
    if isinstance(value, dict):
        if isinstance(value.get("object"), str):
            yield value
        for item in value.values():
            yield from objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from objects(item)


def livemode_flags(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "livemode":
                yield f"{path}.livemode", item
            else:
                yield from livemode_flags(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from livemode_flags(item, f"{path}[{index}]")


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def cassette_problems(exchanges: list[Exchange]) -> list[str]:
    problems: list[str] = []
    for exchange in exchanges:
        where = f"#{exchange.index} {exchange.method} {exchange.path}"
        problems.extend(f"{where}: {p}" for p in _headers(exchange))
        if exchange.response is None:
            continue
        problems.extend(f"{where}: {p}" for p in _body(exchange))
    problems.extend(_replays(exchanges))
    problems.extend(_across(exchanges))
    return problems


def _headers(exchange: Exchange) -> list[str]:
    found = []
    sent, answered = exchange.request_headers, exchange.response_headers
    if sent.get("Stripe-Version") != API_VERSION:
        found.append(f"request Stripe-Version is {sent.get('Stripe-Version')!r}")
    key = sent.get("Idempotency-Key")
    if exchange.method == "POST" and KEYED_POSTS.fullmatch(exchange.path) and not key:
        found.append("a money or account POST without the package's Idempotency-Key")
    if exchange.method == "GET" and key:
        found.append("a GET with an Idempotency-Key")
    if exchange.status == 503 and exchange.response is None:
        return found  # the load balancer answered, not the API: no Stripe headers
    if answered.get("Stripe-Version") != API_VERSION:
        found.append(f"response Stripe-Version is {answered.get('Stripe-Version')!r}")
    request_id = answered.get("Request-Id", "")
    if not REQUEST_ID.fullmatch(request_id):
        found.append(f"Request-Id {request_id!r} is not req_ and 14 letters or digits")
    if sent.get("Stripe-Account") != answered.get("Stripe-Account"):
        found.append("the response does not echo the request's Stripe-Account")
    echoed = answered.get("Idempotency-Key")
    if key and echoed and echoed != key:
        found.append(f"the response echoes Idempotency-Key {echoed!r}, not {key!r}")
    if exchange.method == "POST" and exchange.status == 200:
        if not echoed:
            found.append("a POST answered without its Idempotency-Key header")
        # A replay names the request it replays; _replays checks which one.
        if not _replayed(exchange) and answered.get("Original-Request") != request_id:
            found.append("a first execution's Original-Request is its own Request-Id")
    return found


def _replayed(exchange: Exchange) -> bool:
    """Whether Stripe answered with the stored result of an earlier request."""
    return exchange.response_headers.get("Idempotent-Replayed") == "true"


def _replays(exchanges: list[Exchange]) -> list[str]:
    """A replay's ``Original-Request`` is an earlier first execution of its request.

    Stripe stores the first result under an Idempotency-Key and sends it again
    to a request with the same key and parameters, marked
    ``Idempotent-Replayed: true``; the replay has its own ``Request-Id`` and
    ``Original-Request`` names the first one (method, path, key and body alike).
    """
    found = []
    for position, replay in enumerate(exchanges):
        if not _replayed(replay):
            continue
        original = replay.response_headers.get("Original-Request")
        key = replay.request_headers.get("Idempotency-Key")
        first = [
            e
            for e in exchanges[:position]
            if e.response_headers.get("Request-Id") == original
            and not _replayed(e)
            and (e.method, e.path) == (replay.method, replay.path)
            and e.request_headers.get("Idempotency-Key") == key
            and _parameters(e.body) == _parameters(replay.body)
        ]
        if not key or not first:
            found.append(
                f"#{replay.index} {replay.method} {replay.path}: a replay's Original-Request "
                f"{original!r} is no earlier request with its Idempotency-Key and body"
            )
    return found


def _parameters(body: str) -> list[str]:
    """A form body's ``name=value`` pairs in any order (a JSON body stays whole)."""
    return sorted(body.split("&"))


def _body(exchange: Exchange) -> list[str]:
    found = []
    body = exchange.response
    for path, flag in livemode_flags(body):
        if flag is not False:
            found.append(f"{path} is {flag!r}: cassettes are test mode (sk_test_)")
    date = exchange.date
    for obj in objects(body):
        name = obj["object"]
        ident = obj.get("id")
        label = f"{name} {ident or ''}".strip()
        prefixes = ID_PREFIXES.get(name)
        if prefixes and isinstance(ident, str) and not ident.startswith(prefixes):
            found.append(f"{label}: a {name} id starts with {' or '.join(prefixes)}")
        for (owner, key), allowed in ID_FIELDS.items():
            value = obj.get(key) if owner == name else None
            if isinstance(value, dict):
                value = value.get("id")
            if isinstance(value, str) and not value.startswith(allowed):
                found.append(f"{label}: {key} {value!r} should start with {' or '.join(allowed)}")
        created = obj.get("created")
        if isinstance(created, int) and date is not None and created > date:
            found.append(f"{label}: created {created} is after the response's Date {date}")
        found.extend(f"{label}: {p}" for p in _object_facts(obj))
    if exchange.request_headers.get("Stripe-Account"):
        found.extend(_connected_account_facts(body))
    if exchange.status >= 400 and not (isinstance(body, dict) and "error" in body):
        found.append(f"an HTTP {exchange.status} without an error body")
    return found


def _object_facts(obj: dict[str, Any]) -> list[str]:
    checks = {
        "account": _account,
        "balance_transaction": _balance_transaction,
        "charge": _charge,
        "payment_intent": _payment_intent,
        "transfer": _transfer,
    }
    check = checks.get(obj["object"])
    return check(obj) if check else []


def _account(account: dict[str, Any]) -> list[str]:
    found = []
    if "requirements" in account and "future_requirements" not in account:
        found.append("an account with requirements always has future_requirements")
    for name in ("requirements", "future_requirements"):
        found.extend(f"{name}: {p}" for p in _requirements(account.get(name)))
    requirements = account.get("requirements") or {}
    past_due = requirements.get("past_due") or []
    capabilities = account.get("capabilities") or {}
    if past_due:
        active = sorted(k for k, v in capabilities.items() if v == "active")
        if active:
            found.append(f"capabilities {active} active while requirements are past due")
        if account.get("payouts_enabled") or account.get("charges_enabled"):
            found.append("charges or payouts enabled while requirements are past due")
    if account.get("charges_enabled") and capabilities.get("card_payments") != "active":
        found.append("charges_enabled without an active card_payments capability")
    if account.get("payouts_enabled"):
        external = account.get("external_accounts") or {}
        if isinstance(external, dict) and external.get("data") == []:
            found.append("payouts_enabled without an external account")
        if capabilities and "active" not in capabilities.values():
            found.append("payouts_enabled with no active capability")
    if capabilities.get("transfers") == "active" and requirements.get("disabled_reason"):
        found.append("transfers active on a disabled account")
    return found


def _requirements(requirements: Any) -> list[str]:
    if not isinstance(requirements, dict):
        return []
    found = []
    currently = set(requirements.get("currently_due") or [])
    eventually = set(requirements.get("eventually_due") or [])
    past = set(requirements.get("past_due") or [])
    if currently - eventually:
        found.append(f"currently_due {sorted(currently - eventually)} not in eventually_due")
    if past - currently:
        found.append(f"past_due {sorted(past - currently)} not in currently_due")
    reason = requirements.get("disabled_reason")
    if reason == "requirements.past_due" and not past:
        found.append("disabled_reason requirements.past_due with nothing past due")
    if reason is None and past:
        found.append("requirements past due but no disabled_reason")
    if reason and reason.startswith("requirements.") and not (currently or past):
        found.append(f"disabled_reason {reason} while nothing is due")
    if requirements.get("current_deadline") is not None and not currently:
        found.append("a current_deadline with nothing currently due")
    return found


def _balance_transaction(txn: dict[str, Any]) -> list[str]:
    found = []
    amount, fee, net = txn.get("amount"), txn.get("fee"), txn.get("net")
    if all(isinstance(v, int) for v in (amount, fee, net)) and net != amount - fee:
        found.append(f"net {net} is not amount {amount} less fee {fee}")
    details = txn.get("fee_details")
    fees = sum(d.get("amount", 0) for d in details) if isinstance(details, list) else fee
    if isinstance(fee, int) and fees != fee:
        found.append("fee is not the sum of fee_details")
    return found


def _charge(charge: dict[str, Any]) -> list[str]:
    found = []
    amount = charge.get("amount", 0)
    captured = charge.get("amount_captured", 0)
    refunded = charge.get("amount_refunded", 0)
    if captured > amount:
        found.append(f"amount_captured {captured} is more than amount {amount}")
    if refunded > captured:
        found.append(f"amount_refunded {refunded} is more than amount_captured {captured}")
    if "captured" in charge and charge["captured"] != (captured > 0):
        found.append("captured disagrees with amount_captured")
    if "refunded" in charge and charge["refunded"] != (captured > 0 and refunded == captured):
        found.append("refunded disagrees with amount_refunded")
    if captured == 0 and charge.get("balance_transaction"):
        found.append("an uncaptured charge has no balance_transaction yet")
    if charge.get("id", "").startswith("py_") and not charge.get("source_transfer"):
        found.append("a py_ payment is made by a transfer: source_transfer is set")
    return found


def _payment_intent(intent: dict[str, Any]) -> list[str]:
    found = []
    status = intent.get("status")
    amount = intent.get("amount", 0)
    received = intent.get("amount_received")
    capturable = intent.get("amount_capturable")
    if isinstance(received, int) and received > amount:
        found.append(f"amount_received {received} is more than amount {amount}")
    if status == "requires_capture" and capturable == 0:
        found.append("requires_capture with nothing capturable")
    if status != "requires_capture" and capturable:
        found.append(f"amount_capturable {capturable} while {status}")
    if status == "succeeded" and received == 0:
        found.append("succeeded with nothing received")
    if status in ("requires_payment_method", "requires_confirmation") and intent.get(
        "latest_charge"
    ):
        found.append(f"{status} before any charge was made (no latest_charge yet)")
    charge = intent.get("latest_charge")
    if isinstance(charge, dict):
        if charge.get("payment_intent") != intent.get("id"):
            found.append("the expanded latest_charge belongs to another PaymentIntent")
        for key in ("amount", "currency", "transfer_group"):
            if key in charge and key in intent and charge[key] != intent[key]:
                found.append(f"latest_charge.{key} {charge[key]!r} is not {intent[key]!r}")
        if charge.get("created", 0) < intent.get("created", 0):
            found.append("the charge was created before its PaymentIntent")
    if intent.get("application_fee_amount") is not None and not intent.get("transfer_data"):
        found.append("an application fee without transfer_data (not a destination charge)")
    return found


def _transfer(transfer: dict[str, Any]) -> list[str]:
    found = []
    reversals = transfer.get("reversals")
    if isinstance(reversals, dict) and reversals.get("has_more") is False:
        total = sum(r.get("amount", 0) for r in reversals.get("data", []))
        if total != transfer.get("amount_reversed"):
            found.append(f"amount_reversed {transfer.get('amount_reversed')} is not {total}")
        for reversal in reversals.get("data", []):
            if reversal.get("transfer") != transfer.get("id"):
                found.append(f"reversal {reversal.get('id')} belongs to another transfer")
            if reversal.get("created", 0) < transfer.get("created", 0):
                found.append(f"reversal {reversal.get('id')} is older than its transfer")
    if "reversed" in transfer:
        full = transfer.get("amount_reversed") == transfer.get("amount")
        if transfer["reversed"] != full:
            found.append("reversed disagrees with amount_reversed")
    return found


def _connected_account_facts(body: Any) -> list[str]:
    """What a request with ``Stripe-Account`` (the connected account) may get back.

    With separate charges and transfers and with destination charges the
    customer's charge, its refunds and its disputes are the platform's; the
    connected account only has the ``py_`` payment a transfer made, its
    payouts and its own account objects. A dispute there would mean a direct
    charge, which this package never makes.
    """
    found = []
    for obj in objects(body):
        if obj["object"] == "dispute":
            found.append(f"dispute {obj.get('id')} on a connected account")
        if obj["object"] == "event" and str(obj.get("type", "")).startswith("charge.dispute."):
            found.append(f"event {obj.get('id')} ({obj['type']}) on a connected account")
        if obj["object"] == "charge" and not str(obj.get("id", "")).startswith("py_"):
            found.append(f"charge {obj.get('id')} on a connected account is not a py_ payment")
        if obj["object"] == "payment_intent":
            found.append(f"payment_intent {obj.get('id')} on a connected account")
    return found


def _across(exchanges: list[Exchange]) -> list[str]:
    """Facts that span the interactions of one cassette."""
    found = []
    dates = [e.date for e in exchanges if e.date is not None]
    if dates != sorted(dates):
        found.append("the responses' Date headers go back in time")
    request_ids = [
        e.response_headers["Request-Id"] for e in exchanges if "Request-Id" in e.response_headers
    ]
    retried = {e.response_headers.get("Original-Request") for e in exchanges}
    duplicates = {r for r in request_ids if request_ids.count(r) > 1} - retried
    if duplicates:
        found.append(f"Request-Ids {sorted(duplicates)} repeat")
    seen: dict[str, dict[str, Any]] = {}
    groups: dict[str, str] = {}
    for exchange in exchanges:
        for obj in objects(exchange.response):
            ident = obj.get("id")
            if not isinstance(ident, str):
                continue
            earlier = seen.setdefault(ident, obj)
            for key in ("created", "amount", "currency", "transfer_group"):
                if key in obj and key in earlier and obj[key] != earlier[key]:
                    found.append(f"{ident}: {key} changes between answers")
            if obj["object"] == "payment_intent" and obj.get("latest_charge"):
                charge = obj["latest_charge"]
                charge_id = charge["id"] if isinstance(charge, dict) else charge
                groups[charge_id] = obj.get("transfer_group")
    for exchange in exchanges:
        for obj in objects(exchange.response):
            if obj["object"] != "transfer":
                continue
            source = obj.get("source_transaction")
            if source in groups and obj.get("transfer_group") != groups[source]:
                found.append(
                    f"{obj.get('id')}: transfer_group differs from its source charge's payment"
                )
    return found
