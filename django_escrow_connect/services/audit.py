"""The books audit: what the app believes against what Stripe says, per payment.

:func:`audit_books` (``manage.py escrow_audit``, the ``audit_books_task``
task, and :func:`django_escrow_connect.testing.assert_books_balanced`) reads
each payment that reached Stripe (it has a PaymentIntent id) with its
transfers, reversals and refunds, asks Stripe for the PaymentIntent, its
charge, the transfers of the payment's ``transfer_group`` and the refunds of
the PaymentIntent, and compares:

- the PaymentIntent: amount, currency, amount captured (the payment's
  ``amount_captured`` when a capture took less than the amount; and, for a
  manual-capture hold, also one an older version left ``partially_released``,
  that the authorisation is still there);
- the refunds: each Stripe refund against the app's Refund row with its id
  (known, same amount, both counted or both failed/canceled), and the total
  of Stripe's non-failed, non-canceled refunds against ``amount_refunded``
  (a Refund of an uncaptured authorisation, which Stripe made before API
  2025-03-31 after a capture for less, gave back nothing charged: left out);
- the transfers: each Stripe transfer against the app's Transfer row with
  its id (known, amount, ``amount_reversed``, destination, currency), the
  totals against ``amount_transferred`` / ``amount_reversed``, and the app's
  succeeded transfer reversals against what Stripe reversed;
- destination charges (manual capture): the charge's application fee against
  ``platform_fee`` and the doer's share of Stripe's transfer against
  ``amount_transferred``.

Each disagreement is a :class:`Divergence`. A payment whose money is
legitimately in flight (:func:`_unsettled_reason`) is listed as
:class:`Unsettled` instead, and only the checks of what can never be right
apply to it (:func:`_impossible`): more than one live transfer, transfers
over what was captured, refunds over the capture, the doer keeping money the
customer got back. A payment Stripe could not be asked about is an
:class:`AuditError`. Nothing here writes to the database or moves money.

Money is integers in minor units; rounding never comes into it except for a
destination charge's proportional reversals (one minor unit per refund, as
Stripe rounds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .. import transitions
from ..exceptions import GatewayError
from ..states import (
    UNRESOLVED_OPERATION_STATES,
    EscrowStrategy,
    RefundStatus,
    TransferReversalStatus,
    TransferStatus,
)
from ..states import PaymentStatus as S
from .books import refunds_uncaptured_money
from .common import gateway as default_gateway
from .common import payment_model
from .releases import RECORDED_KEY_PREFIX

logger = logging.getLogger("django_escrow_connect.audit")

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "AuditError",
    "AuditResult",
    "Divergence",
    "Unsettled",
    "audit_books",
    "render_text",
]

#: Payments read from the database per query (with their rows prefetched).
DEFAULT_BATCH_SIZE = 200

#: Refund states whose amount is counted in ``payment.amount_refunded``.
_COUNTED_REFUNDS = frozenset(
    {RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED}
)
#: Stripe refund statuses that give nothing back to the customer.
_DEAD_STRIPE_REFUNDS = frozenset({"failed", "canceled"})
#: Transfer rows that exist at Stripe (they have a Stripe id).
_MADE_TRANSFERS = frozenset(
    {TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED, TransferStatus.REVERSED}
)
#: Separate charges and transfers: states in which the charge was captured.
_CAPTURED_STATES = frozenset(
    {
        S.HELD,
        S.RELEASING,
        S.PARTIALLY_RELEASED,
        S.RELEASED,
        S.PARTIALLY_REFUNDED,
        S.REFUNDED,
        S.DISPUTED,
        S.DISPUTE_LOST,
    }
)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """One thing the app's books and Stripe's disagree on.

    ``check`` names what was compared (``amount_refunded``,
    ``transfer_unknown_to_app``, ...); an amount is ``None`` when that side
    has nothing (e.g. a transfer the app has no row for).
    """

    payment_id: str
    check: str
    app_amount: int | None
    stripe_amount: int | None
    currency: str
    stripe_object: str = ""
    detail: str = ""

    def __str__(self) -> str:
        app = "-" if self.app_amount is None else self.app_amount
        stripe = "-" if self.stripe_amount is None else self.stripe_amount
        text = f"{self.payment_id}: {self.check}: app {app}, Stripe {stripe} {self.currency}"
        extra = ", ".join(part for part in (self.stripe_object, self.detail) if part)
        return f"{text} ({extra})" if extra else text


@dataclass(frozen=True)
class Unsettled:
    """A payment whose money is legitimately in flight: not compared in full."""

    payment_id: str
    status: str
    reason: str

    def __str__(self) -> str:
        return f"{self.payment_id}: {self.status}: {self.reason}"


@dataclass(frozen=True)
class AuditError:
    """A payment Stripe could not be asked about (its books are unknown)."""

    payment_id: str
    error: str

    def __str__(self) -> str:
        return f"{self.payment_id}: {self.error}"


@dataclass
class AuditResult:
    """What :func:`audit_books` found. ``clean``: no divergence and no error."""

    audited: int = 0
    skipped: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    unsettled: list[Unsettled] = field(default_factory=list)
    errors: list[AuditError] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.divergences and not self.errors

    def for_payment(self, payment_id: Any) -> list[Divergence]:
        return [d for d in self.divergences if d.payment_id == str(payment_id)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``clean``, counts, and the three lists of records."""
        return {
            "clean": self.clean,
            "audited": self.audited,
            "skipped": self.skipped,
            "divergences": [asdict(d) for d in self.divergences],
            "unsettled": [asdict(u) for u in self.unsettled],
            "errors": [asdict(e) for e in self.errors],
        }


# --------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------


def audit_books(
    *,
    payment_id: Any = None,
    since: datetime | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    payments: Any = None,
    gateway: Any = None,
) -> AuditResult:
    """Compare every payment's books with Stripe's; see the module docstring.

    ``payment_id``: only that payment. ``since``: payments updated at or
    after it. ``limit``: at most that many payments (oldest change first).
    ``payments``: a queryset of payments to start from instead of all of
    them. The payments are read ``batch_size`` at a time (their transfers,
    reversals and refunds with them), so the number of queries depends on
    the number of batches, not of payments; Stripe is asked four times per
    payment (five for a destination charge whose transfer is not in its
    ``transfer_group``, and one more per transfer staff made in the Dashboard
    and recorded, which has none).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if limit is not None and limit < 0:
        raise ValueError("limit must be zero or more")
    client = gateway if gateway is not None else default_gateway()
    queryset = payments if payments is not None else payment_model().objects.all()
    if payment_id is not None:
        queryset = queryset.filter(pk=payment_id)
    if since is not None:
        queryset = queryset.filter(updated_at__gte=since)
    result = AuditResult()
    result.skipped = queryset.filter(stripe_payment_intent_id="").count()
    reached = (
        queryset.exclude(stripe_payment_intent_id="")
        .order_by("updated_at", "pk")
        .prefetch_related("transfers", "transfer_reversals", "refunds", "operations")
    )
    if limit is not None:
        reached = reached[:limit]
    for payment in reached.iterator(chunk_size=batch_size):
        result.audited += 1
        try:
            books = _stripe_books(client, payment)
        except GatewayError as exc:
            message = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            logger.warning("audit: Stripe lookup failed for %s: %s", payment.pk, message)
            result.errors.append(AuditError(str(payment.pk), message))
            continue
        reason = _unsettled_reason(payment)
        if reason is not None:
            result.unsettled.append(Unsettled(str(payment.pk), payment.status, reason))
            result.divergences.extend(_impossible(payment, books))
        else:
            result.divergences.extend(_compare(payment, books))
    for divergence in result.divergences:
        logger.warning("audit: %s", divergence)
    return result


def _unsettled_reason(payment: Any) -> str | None:
    """Why ``payment``'s money is legitimately in flight, or None when it is settled.

    Uses only the payment and its prefetched rows (no query of its own): an
    unresolved operation in the journal, or a state that waits for Stripe.
    """
    for operation in payment.operations.all():
        if operation.status in UNRESOLVED_OPERATION_STATES:
            return (
                f"{operation.get_kind_display().lower()} ({operation.idempotency_key}) "
                f"{operation.status}: escrow_reconcile settles it"
            )
    if payment.status == S.RELEASING:
        return "release sent, outcome not known yet (escrow_reconcile finishes it)"
    if payment.status == S.PROCESSING:
        return "Stripe is still processing the payment"
    for refund in payment.refunds.all():
        if refund.status == RefundStatus.PENDING and not refund.stripe_refund_id:
            return f"refund {refund.pk} of {refund.amount} sent, outcome not known yet"
    for transfer in payment.transfers.all():
        if transfer.status == TransferStatus.PENDING:
            return f"transfer of {transfer.amount} sent, outcome not known yet"
    for reversal in payment.transfer_reversals.all():
        if reversal.status == TransferReversalStatus.PENDING:
            return f"transfer reversal of {reversal.amount} sent, outcome not known yet"
    return None


# --------------------------------------------------------------------------
# Stripe's side
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _StripeBooks:
    intent: Any
    charge: Any  # ChargeSnapshot | None
    transfers: list[Any]
    refunds: list[Any]

    @property
    def captured(self) -> int:
        if self.charge is not None:
            return int(self.charge.amount_captured)
        return int(self.intent.amount_received)

    @property
    def live_refunds(self) -> list[Any]:
        """Refunds of charged money that are not failed or canceled.

        Before API 2025-03-31 a capture for less made a Refund of the
        uncaptured rest (and counted it in the charge's ``amount_refunded``):
        the customer was never charged it, and the app records it without
        counting it, so it is left out here too.
        """
        return [
            r
            for r in self.refunds
            if r.status not in _DEAD_STRIPE_REFUNDS and not refunds_uncaptured_money(r.reason)
        ]

    @property
    def refunded(self) -> int:
        """What the live refunds gave back (pending ones count, as in the app)."""
        return sum(r.amount for r in self.live_refunds)

    @property
    def transferred(self) -> int:
        return sum(t.amount for t in self.transfers)

    @property
    def reversed(self) -> int:
        return sum(t.amount_reversed for t in self.transfers)

    @property
    def fee(self) -> int:
        return int(self.charge.application_fee_amount or 0) if self.charge is not None else 0


def _stripe_books(client: Any, payment: Any) -> _StripeBooks:
    intent = client.retrieve_payment_intent(payment.stripe_payment_intent_id)
    charge_id = intent.latest_charge or payment.stripe_charge_id
    charge = client.retrieve_charge(charge_id) if charge_id else None
    transfers = list(client.list_transfers(transfer_group=payment.transfer_group))
    if charge is not None and charge.transfer and all(t.id != charge.transfer for t in transfers):
        # A destination charge's transfer, made by Stripe, may carry no group.
        transfers.append(client.retrieve_transfer(charge.transfer))
    listed = {t.id for t in transfers}
    for row in payment.transfers.all():  # prefetched with the batch
        # A transfer staff made in the Dashboard and recorded
        # (releases.record_outside_transfer) carries no transfer group: read
        # by its id, or it would be reported missing at Stripe.
        if (
            row.idempotency_key.startswith(RECORDED_KEY_PREFIX)
            and row.stripe_transfer_id not in listed
        ):
            transfers.append(client.retrieve_transfer(row.stripe_transfer_id))
    refunds = list(client.list_refunds(payment_intent=payment.stripe_payment_intent_id))
    return _StripeBooks(intent=intent, charge=charge, transfers=transfers, refunds=refunds)


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def _impossible(payment: Any, books: _StripeBooks) -> list[Divergence]:
    """What can never be right at Stripe, whatever is in flight."""
    found: list[Divergence] = []

    def add(check: str, app: int | None, stripe: int | None, detail: str) -> None:
        found.append(Divergence(str(payment.pk), check, app, stripe, payment.currency, "", detail))

    live = [t for t in books.transfers if t.amount_reversed < t.amount]
    if payment.released_in_parts:
        # One transfer per release and payee: two for the same pair is money
        # sent twice. The app's row names the pair (a transfer made in the
        # Dashboard and recorded carries no metadata); else the metadata does.
        rows = {
            row.stripe_transfer_id: (str(row.release_id or ""), str(row.payee_id or ""))
            for row in payment.transfers.all()  # prefetched with the batch
            if row.stripe_transfer_id
        }
        seen: dict[tuple[str, str], int] = {}
        for transfer in books.transfers:
            metadata = transfer.metadata or {}
            pair = rows.get(transfer.id) or (
                metadata.get("escrow_release_id", ""),
                metadata.get("escrow_payee", ""),
            )
            seen[pair] = seen.get(pair, 0) + 1
        twice = sorted(pair for pair, count in seen.items() if count > 1)
        if twice:
            add(
                "multiple_live_transfers",
                payment.amount_transferred,
                sum(t.amount - t.amount_reversed for t in live),
                f"several transfers for (release, payee) {twice}",
            )
    elif len(live) > 1:
        add(
            "multiple_live_transfers",
            payment.amount_transferred,
            sum(t.amount - t.amount_reversed for t in live),
            "live transfers: " + ", ".join(t.id for t in live),
        )
    captured, refunded = books.captured, books.refunded
    if books.transferred > captured:
        add(
            "transfers_exceed_capture",
            # What the app believes was charged (less after a capture for less).
            payment.amount_charged,
            books.transferred,
            f"transferred {books.transferred} of {captured} captured",
        )
    if refunded > captured:
        add(
            "refunds_exceed_capture",
            payment.amount_refunded,
            refunded,
            f"refunded {refunded} of {captured} captured",
        )
    kept = books.transferred - books.reversed
    if kept > captured - refunded:
        add(
            "doer_keeps_refunded_money",
            payment.amount_transferred - payment.amount_reversed,
            kept,
            f"transferred - reversed = {kept} > captured - refunded = {captured - refunded}",
        )
    return found


def _compare(payment: Any, books: _StripeBooks) -> list[Divergence]:
    found = _impossible(payment, books)
    pid, currency = str(payment.pk), payment.currency

    def add(
        check: str, app: int | None, stripe: int | None, obj: str = "", detail: str = ""
    ) -> None:
        found.append(Divergence(pid, check, app, stripe, currency, obj, detail))

    intent = books.intent
    manual = payment.strategy == EscrowStrategy.MANUAL_CAPTURE

    # --- the PaymentIntent and its charge ------------------------------------
    if intent.currency.lower() != payment.currency.lower():
        add("currency", payment.amount, intent.amount, intent.id, f"Stripe: {intent.currency}")
    if intent.amount != payment.amount:
        add("payment_intent_amount", payment.amount, intent.amount, intent.id)
    app_captured = _app_captured(payment, manual)
    if app_captured != books.captured:
        add("amount_captured", app_captured, books.captured, _charge_id(books) or intent.id)
    # A manual-capture payment's authorisation must still be there while a
    # part of it could be released: held, or ``partially_released`` by an
    # older version's release in parts whose transfer Stripe refused
    # (docs/recovery.md). The states of the lapse (payment_intents._canceled).
    holding = transitions.sources(type(payment), "release_part")
    if manual and payment.status in holding and intent.status != "requires_capture":
        add(
            "authorisation",
            payment.amount,
            intent.amount_capturable,
            intent.id,
            f"the app holds an authorisation; the PaymentIntent is {intent.status}",
        )

    # --- refunds ------------------------------------------------------------------
    _compare_refunds(payment, books, add)

    # --- transfers and reversals ----------------------------------------------------
    _compare_transfers(payment, books, add, manual=manual)

    # --- destination charges: the application fee -------------------------------------
    if manual and app_captured and books.charge is not None and payment.platform_fee != books.fee:
        add("application_fee", payment.platform_fee, books.fee, books.charge.id)
    return found


def _app_captured(payment: Any, manual: bool) -> int:
    """What the app believes the charge captured (``amount_captured`` when less than all)."""
    if manual:
        # Authorised while held; capturing is the release.
        return payment.amount_charged if payment.released_at is not None else 0
    return payment.amount_charged if payment.status in _CAPTURED_STATES else 0


def _charge_id(books: _StripeBooks) -> str:
    return str(books.charge.id) if books.charge is not None else ""


def _compare_refunds(payment: Any, books: _StripeBooks, add: Any) -> None:
    rows = list(payment.refunds.all())
    by_id = {row.stripe_refund_id: row for row in rows if row.stripe_refund_id}
    at_stripe = {refund.id: refund for refund in books.refunds}
    for refund in books.refunds:
        stripe_live = refund.status not in _DEAD_STRIPE_REFUNDS
        row = by_id.get(refund.id)
        if row is None:
            if stripe_live and not refunds_uncaptured_money(refund.reason):
                add("refund_unknown_to_app", None, refund.amount, refund.id)
            continue
        if row.amount != refund.amount:
            add("refund_amount", row.amount, refund.amount, refund.id)
        app_live = row.status in _COUNTED_REFUNDS
        if app_live != stripe_live:
            add(
                "refund_status",
                row.amount if app_live else 0,
                refund.amount if stripe_live else 0,
                refund.id,
                f"app {row.status}, Stripe {refund.status}",
            )
    for row in rows:
        if row.status not in _COUNTED_REFUNDS:
            continue
        if row.stripe_refund_id and row.stripe_refund_id not in at_stripe:
            add("refund_missing_at_stripe", row.amount, None, row.stripe_refund_id)
        elif not row.stripe_refund_id and row.status != RefundStatus.PENDING:
            add("refund_missing_at_stripe", row.amount, None, "", f"refund {row.pk} has no id")
    if payment.amount_refunded != books.refunded:
        add("amount_refunded", payment.amount_refunded, books.refunded, _charge_id(books))


def _compare_transfers(payment: Any, books: _StripeBooks, add: Any, *, manual: bool) -> None:
    rows = [row for row in payment.transfers.all() if row.status in _MADE_TRANSFERS]
    by_id = {row.stripe_transfer_id: row for row in rows}
    at_stripe = {transfer.id: transfer for transfer in books.transfers}
    for transfer in books.transfers:
        if transfer.currency.lower() != payment.currency.lower():
            add("transfer_currency", None, transfer.amount, transfer.id, transfer.currency)
        row = by_id.get(transfer.id)
        if row is None:
            # A destination charge's transfer is Stripe's own: the app
            # records it from a webhook, and its totals stand without a row.
            if not manual:
                add("transfer_unknown_to_app", None, transfer.amount, transfer.id)
            continue
        if row.amount != transfer.amount:
            add("transfer_amount", row.amount, transfer.amount, transfer.id)
        if row.amount_reversed != transfer.amount_reversed:
            add(
                "transfer_amount_reversed",
                row.amount_reversed,
                transfer.amount_reversed,
                transfer.id,
            )
        if transfer.destination and row.destination_account_id != transfer.destination:
            add(
                "transfer_destination",
                row.amount,
                transfer.amount,
                transfer.id,
                f"app {row.destination_account_id}, Stripe {transfer.destination}",
            )
    for row in rows:
        if row.stripe_transfer_id not in at_stripe:
            add("transfer_missing_at_stripe", row.amount, None, row.stripe_transfer_id)

    # Reversals the app made (succeeded rows) must be in Stripe's totals.
    made: dict[str, int] = {}
    for reversal in payment.transfer_reversals.all():
        if reversal.status == TransferReversalStatus.SUCCEEDED:
            made[reversal.stripe_transfer_id] = made.get(reversal.stripe_transfer_id, 0) + (
                reversal.amount
            )
    for transfer_id, amount in made.items():
        stripe_reversed = at_stripe[transfer_id].amount_reversed if transfer_id in at_stripe else 0
        if amount > stripe_reversed:
            add("reversal_missing_at_stripe", amount, stripe_reversed, transfer_id)

    if manual:
        share, reversed_share, slack = _destination_share(payment, books)
    else:
        share, reversed_share, slack = books.transferred, books.reversed, 0
    if payment.amount_transferred != share:
        add("amount_transferred", payment.amount_transferred, share)
    if abs(payment.amount_reversed - reversed_share) > slack:
        add("amount_reversed", payment.amount_reversed, reversed_share)


def _destination_share(payment: Any, books: _StripeBooks) -> tuple[int, int, int]:
    """A destination charge's doer share, its reversed part, and the rounding slack.

    Stripe transfers the whole charge and takes the application fee back
    (the transfer's amount is what was captured); a transfer of the
    captured amount less the fee is read the same way. Reversals made by
    refunds with ``reverse_transfer`` are proportional to the refund, so the
    share's reversed part may differ from the app's by one minor unit per
    refund.
    """
    transferred, captured, fee = books.transferred, books.captured, books.fee
    if not books.transfers:
        return 0, 0, 0
    share = transferred - fee if fee and transferred == captured else transferred
    reversed_share = (
        books.reversed if transferred == share else (books.reversed * share) // transferred
    )
    refunds = len(books.live_refunds)
    return share, reversed_share, refunds


# --------------------------------------------------------------------------
# Text rendering (the command's default format)
# --------------------------------------------------------------------------


def render_text(result: AuditResult) -> str:
    """The audit result as the ``escrow_audit`` command prints it."""
    lines = [
        f"Audited {result.audited} payment(s) against Stripe; "
        f"{result.skipped} never reached Stripe (skipped).",
    ]
    lines.extend(_section("Divergences", result.divergences))
    lines.extend(_section("Unsettled (money in flight, not compared)", result.unsettled))
    lines.extend(_section("Could not audit (Stripe lookup failed)", result.errors))
    lines.append("The books agree with Stripe." if result.clean else "The books disagree.")
    return "\n".join(lines)


def _section(title: str, items: Iterable[Any]) -> Iterator[str]:
    items = list(items)
    if not items:
        return
    yield f"{title}: {len(items)}"
    for item in items:
        yield f"  {item}"
