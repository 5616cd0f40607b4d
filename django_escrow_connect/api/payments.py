"""The payment API: create, confirm (release), read, list, refund, cancel,
retry, and the two dashboards.

Views only parse input, scope querysets and call the services in
:mod:`django_escrow_connect.services.payments`; the services lock rows, call
Stripe and enforce the state machine. The amount of a payment never comes
from a request: ``amount`` in a create request is only compared with the
task's terms.

Who sees what (every queryset is filtered in the database):

* the payer and the payee user see their payments;
* platform staff (``is_staff`` and active) see every payment;
* admins of a payee organization see that organization's payments. The host's
  ``ORGANIZATION_ADMIN_PREDICATE`` is a per-object callable, so it cannot be
  turned into SQL; ``ADMINISTERED_ORGANIZATIONS`` is the same rule as a
  queryset. A single payment is fetched in one query scoped with it (when it
  is not set: fetched by id and the predicate asked once for its
  organization); a list or dashboard shows an organization's payments when
  ``organization_id`` is passed and the predicate accepts that one
  organization. The query count stays constant however many organizations
  exist, and no admin membership is guessed in SQL.

Someone who may not see a payment gets 404, never 403, so ids do not leak.
"""

from __future__ import annotations

import functools
import operator
import uuid
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import NotSupportedError, connections, router, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    Exists,
    F,
    FilteredRelation,
    Func,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Floor, Greatest
from django.db.models.lookups import In
from django.utils.translation import gettext as _
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from .. import permissions, swappable
from ..conf import escrow_settings
from ..holdings import (
    CHARGED,
    HELD,
    held_after_loss,
    holding,
    lost_payment,
    lost_to_disputes,
    release_caught_by_loss,
    release_in_flight,
)
from ..money import format_money
from ..services import books, errors
from ..services import payments as payment_services
from ..services import releases as release_services
from ..states import DISPUTE_CLOSED_STATES, ReleaseStatus, TransferStatus
from ..states import PaymentStatus as S
from .errors import EscrowAPIView
from .schema import OpenApiParameter, extend_schema, view_schema
from .serializers import (
    IDEMPOTENCY_KEY_PARAMETER,
    IsoDateTimeField,
    MinorAmountField,
    NullIfBlankCharField,
    StrictSerializer,
    error_responses,
    idempotency_key,
    validated,
)

__all__ = [
    "CustomerDashboardView",
    "MilestoneDeliverView",
    "PaymentCancelView",
    "PaymentConfirmView",
    "PaymentCreateView",
    "PaymentDetailView",
    "PaymentListView",
    "PaymentRefundView",
    "PaymentReleaseView",
    "PaymentRetryView",
    "TaskDoerDashboardView",
    "get_visible_payment",
    "visible_payments",
]

#: Where earnings come from: money that reached the doer and stayed there
#: (a payment released in parts has paid out its releases so far). A payment
#: a dispute froze counts as the state it was in (:func:`settled_in`): the
#: doer keeps a transfer made before a dispute, also one lost.
EARNING_STATES = (S.RELEASED, S.PARTIALLY_RELEASED, S.PARTIALLY_REFUNDED)
#: A payee's transfers that reached its account (a reversal is subtracted).
PAID_TRANSFER_STATES = (
    TransferStatus.CREATED,
    TransferStatus.PARTIALLY_REVERSED,
    TransferStatus.REVERSED,
)
#: Money the customer was charged (or has authorised) and did not get back:
#: a ``dispute_lost`` payment less what its dispute gave back (:func:`spent`).
SPENDING_STATES = (
    S.HELD,
    S.RELEASING,
    S.PARTIALLY_RELEASED,
    S.RELEASED,
    S.PARTIALLY_REFUNDED,
    S.REFUNDED,
    S.DISPUTED,
    S.DISPUTE_LOST,
)
ESCROW_STATES = (S.HELD, S.RELEASING, S.PARTIALLY_RELEASED)
#: A dispute decides these payments' state; ``status_before_dispute`` is the
#: state they return to when it closes in the platform's favour.
FROZEN_STATES = (S.DISPUTED, S.DISPUTE_LOST)
#: Where a pending release may still owe a payee a share: a refund beyond
#: what was held leaves a payment released in parts ``partially_refunded``,
#: and the next release request still sends what the refund left of a share
#: not sent yet (docs/splits.md).
OWING_STATES = (*ESCROW_STATES, S.PARTIALLY_REFUNDED)
DASHBOARD_DEFAULT_LIMIT = 10
DASHBOARD_MAX_LIMIT = 50


# --------------------------------------------------------------------------
# Querysets
# --------------------------------------------------------------------------


def _payment_model() -> Any:
    return swappable.load("EscrowPayment")


def with_details(queryset: Any) -> Any:
    """Everything a serialized payment shows, in a fixed number of queries."""
    return queryset.prefetch_related(
        Prefetch(
            "milestones", queryset=swappable.load("EscrowMilestone").objects.order_by("position")
        ),
        Prefetch("payees", queryset=swappable.load("EscrowPayee").objects.order_by("position")),
        Prefetch(
            "payees__transfers",
            queryset=swappable.load("Transfer").objects.order_by("created_at"),
            to_attr="transfer_list",
        ),
        Prefetch("transfers", queryset=swappable.load("Transfer").objects.order_by("created_at")),
        Prefetch("refunds", queryset=swappable.load("Refund").objects.order_by("created_at")),
        Prefetch("disputes", queryset=swappable.load("Dispute").objects.order_by("created_at")),
    )


def visible_payments(user: Any) -> Any:
    """Payments ``user`` may list without naming an organization."""
    return _payment_model().objects.filter(_any_of(visible_to(user)))


def _any_of(conditions: list[Q]) -> Q:
    """The conditions ORed."""
    return functools.reduce(operator.or_, conditions, Q())


def visible_to(user: Any) -> list[Q]:
    """The conditions, any of which lets ``user`` list a payment (staff: all payments)."""
    if permissions.is_platform_staff(user):
        return [Q()]
    return [Q(payer=user), *_paid_to_user(user)]


def _paid_to_user(user: Any) -> list[Q]:
    """Payments ``user`` is paid by: as their payee, or as one of several (payee rows)."""
    return [Q(payee_user=user), _paying(Q(user=user))]


def _paid_to_organization(organization: Any) -> list[Q]:
    """Payments ``organization`` is paid by: as their payee, or as one of several."""
    return [Q(payee_organization=organization), _paying(Q(organization=organization))]


def _paying(payee: Q) -> Q:
    """Payments with a payee row matching ``payee``, as ``pk = ANY(ARRAY(subquery))``."""
    # No ORDER BY (the payee's default ordering joins the payment table).
    payees = swappable.load("EscrowPayee").objects.filter(payee).order_by().values("payment_id")
    return Q(_InArray(F("pk"), payees))


class _InArray(In):
    """``pk IN (subquery)``, written ``pk = ANY(ARRAY(subquery))`` on PostgreSQL.

    ORed with ``payer = u OR payee_user = u``, a plain ``IN (subquery)`` is a
    hashed subplan that PostgreSQL can only test row by row: the list of a
    user's payments scanned the whole payment table (30 ms at 100,000 rows,
    growing with the table). The array form runs the subquery once and makes
    the condition an index condition on the primary key, so the three OR
    arms become one bitmap OR of index scans: the cost follows the user's own
    payments, not the table's size (docs/performance.md).
    """

    def get_rhs_op(self, connection: Any, rhs: str) -> str:
        if connection.vendor == "postgresql" and not self.rhs_is_direct_value():
            return f"= ANY(ARRAY{rhs})"
        return str(super().get_rhs_op(connection, rhs))


#: A list's order: newest first, the primary key breaking ties.
NEWEST_FIRST = ("-created_at", "-pk")


class NewestOfArms:
    """Payments matching any of several conditions, newest first, page by page.

    What the paginator is given for a list under several conditions (a
    user's without ``role``: payer, payee, split payee; ``role=task_doer`` and
    an organization's: payee, split payee): the count is one query on the
    ORed conditions (a bitmap OR of index scans),
    and a page ``[start:stop]`` reads the payments whose ids are in the
    ``UNION`` of each condition's newest ``stop`` rows, then sorts those
    (at most ``stop`` per condition). Each condition walks its own index
    (``payer``, ``payee_user``: ``(party, -created_at)``) only as far as the
    page needs, so the page's cost follows the page, not how many payments
    the user has: read as one ``ORDER BY ... LIMIT`` over the OR, PostgreSQL
    gathers and sorts all of a heavy user's rows for the newest 20
    (docs/performance.md). ``narrow`` (e.g. one task's) applies to each.

    PostgreSQL only (a ``LIMIT`` inside a ``UNION``'s arms): elsewhere
    :func:`newest_first` returns the plain ORed queryset.
    """

    #: The paginator does not warn about an unordered list: this one is.
    ordered = True

    def __init__(self, arms: list[Q], narrow: Q, prepare: Any) -> None:
        self.arms = arms
        self.narrow = narrow
        self.prepare = prepare

    def count(self) -> int:
        return int(_payment_model().objects.filter(_any_of(self.arms)).filter(self.narrow).count())

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice) -> list[Any]:
        if not isinstance(index, slice) or index.step is not None:
            raise TypeError("NewestOfArms takes a slice [start:stop]")
        start, stop = index.start or 0, index.stop
        if stop is None or start < 0 or stop < start:
            raise ValueError("NewestOfArms takes a bounded, non-negative slice")
        if stop == start:
            return []
        Payment = _payment_model()
        newest = [
            Payment.objects.filter(arm)
            .filter(self.narrow)
            .order_by(*NEWEST_FIRST)
            .values("pk")[:stop]
            for arm in self.arms
        ]
        candidates = newest[0].union(*newest[1:])
        page = Payment.objects.filter(pk__in=candidates).order_by(*NEWEST_FIRST)[start:stop]
        return list(self.prepare(page))


def newest_first(arms: list[Q], narrow: Q, *, prepare: Any) -> Any:
    """Payments matching any of ``arms`` and ``narrow``, newest first, for a paginator.

    ``prepare`` finishes a queryset of the page (e.g. :func:`with_details`).
    """
    Payment = _payment_model()
    connection = connections[router.db_for_read(Payment)]
    if len(arms) > 1 and connection.features.supports_slicing_ordering_in_compound:
        return NewestOfArms(arms, narrow, prepare)
    return prepare(Payment.objects.filter(_any_of(arms)).filter(narrow).order_by(*NEWEST_FIRST))


def get_visible_payment(user: Any, payment_id: Any, *, details: bool = False) -> Any:
    """The payment ``payment_id`` if ``user`` may see it, else :class:`errors.NotFound`.

    With ``ADMINISTERED_ORGANIZATIONS`` the whole rule is one query (payer,
    payee user, or payee organization in the user's administered ones), so an
    unknown id, someone else's payment and a payment to an organization all
    take the same queries: payment ids derive from task numbers, and a
    slower answer for some of them would tell what a 404 hides. Without it
    the organization's payments are read and the per-object predicate asked.
    """
    try:
        pk = uuid.UUID(str(payment_id))
    except ValueError:
        raise errors.NotFound(_("No such payment.")) from None
    queryset = _payment_model().objects.filter(pk=pk)
    administered = escrow_settings.ADMINISTERED_ORGANIZATIONS
    # True when the query alone decides: nothing is asked after the fetch.
    scoped_in_sql = True
    if permissions.is_platform_staff(user):
        pass  # staff see every payment
    elif administered is not None:
        organizations = administered(user)
        if isinstance(organizations, QuerySet):
            organizations = organizations.values("pk")  # a subquery, not a second query
        queryset = queryset.filter(
            _any_of(visible_to(user))
            | Q(payee_organization__in=organizations)
            | _paying(Q(organization__in=organizations))
        )
    else:
        scoped_in_sql = False
        queryset = queryset.filter(
            _any_of(visible_to(user))
            | Q(payee_organization__isnull=False)
            | _paying(Q(organization__isnull=False))
        )
    if details:
        queryset = with_details(queryset)
    payment = queryset.first()
    if payment is None or not (scoped_in_sql or permissions.may_view(payment, user)):
        raise errors.NotFound(_("No such payment."))
    return payment


def administered_organization(user: Any, organization_id: Any) -> Any:
    """The organization ``organization_id`` if ``user`` administers it (or is staff)."""
    Organization = swappable.load("Organization")
    try:
        organization = Organization.objects.get(pk=organization_id)
    except (Organization.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise errors.NotFound(_("No such organization.")) from None
    if not (
        permissions.is_platform_staff(user) or permissions.is_organization_admin(user, organization)
    ):
        raise errors.NotFound(_("No such organization."))
    return organization


def spent() -> Case:
    """What the customer spent on a payment, as a database expression.

    Charged less refunded, and less the disputed amount a lost dispute gave
    back to the customer: all of it, also what a release had paid out (the
    platform bore that). Never below 0: a refund confirmed after the loss
    may have given back more (docs/recovery.md).
    """
    return lost_payment(
        Greatest(CHARGED - F("amount_refunded") - lost_to_disputes(), Value(0)),
        CHARGED - F("amount_refunded"),
    )


def settled_in(states: tuple[str, ...], prefix: str = "") -> Q:
    """Payments in ``states``, and those a dispute froze (:data:`FROZEN_STATES`) in one of them.

    A frozen payment counts as the state its dispute returns it to when it
    closes in the platform's favour (``status_before_dispute``, blank: held).
    ``prefix`` reaches the payment from another model (``"payment__"``).
    """
    before = (*states, "") if S.HELD in states else states
    return Q(**{f"{prefix}status__in": states}) | Q(
        **{f"{prefix}status__in": FROZEN_STATES, f"{prefix}status_before_dispute__in": before}
    )


def held_net_of_fee() -> Any:
    """The payees' part of what a payment holds, as a database expression.

    ``platform_fee`` is the fee the releases took plus the fee on what is
    held, so the releases' own fees are added back. A subquery inside the one
    aggregate keeps the dashboard's query count the same whatever the tables
    hold.
    """
    taken_by_releases = (
        swappable.load("EscrowRelease")
        .objects.filter(payment=OuterRef("pk"))
        .order_by()
        .values("payment")
        .annotate(taken=Sum("platform_fee"))
        .values("taken")
    )
    return HELD - F("platform_fee") + Coalesce(Subquery(taken_by_releases), Value(0))


def in_escrow_for_payee(arms: list[Q], own_row: Q) -> list[dict[str, Any]]:
    """What escrow holds for a payee, per currency, in one query whatever the data.

    ``arms`` select the payments the payee is paid by (first payee, or one of
    several); ``own_row`` selects the payee's own payee rows (e.g.
    ``Q(payees__user=user)``). A payment without payee rows (one payee, no
    milestones) holds its whole net for its payee. A payment with payee rows
    (several payees, or milestones) holds for each payee their share of the
    held net: the net times the payee's share (basis points or amount) over
    all its payees' shares, rounded down. A release divides its own net
    exactly (largest remainder, :func:`~django_escrow_connect.terms.split_amount`),
    so a payee may receive up to one minor unit per release more than shown
    (shares move in steps of :func:`~django_escrow_connect.money.amount_step`:
    three-decimal currencies in steps of 10, up to 10 more or 9 less; ISK in
    steps of 100, up to 100 more or 99 less). The rest a partial dispute
    lost left held (:func:`holding`) counts for its one doer as what its
    release sends: the rest less the fee ``PLATFORM_FEE_POLICY`` takes on it
    (on a payment released in parts, the fee of one more release:
    :func:`~django_escrow_connect.services.releases.rest_transfer_and_fee`).
    A release a lost dispute caught in flight counts as a ``releasing``
    payment does: what its transfer sends.
    """
    # The payee's own row is a LEFT JOIN (no subquery per payment); the
    # payees' total is read only for the payments that have rows.
    weight = Coalesce("own_row__basis_points", "own_row__amount", output_field=BigIntegerField())
    all_weights = (
        swappable.load("EscrowPayee")
        .objects.filter(payment=OuterRef("pk"))
        .order_by()
        .values("payment")
        .annotate(total=Sum(Coalesce("basis_points", "amount", output_field=BigIntegerField())))
        .values("total")
    )
    net = held_net_of_fee()
    share = Case(
        When(own_row__id__isnull=True, then=net),
        default=Floor(net * weight / Subquery(all_weights)),
        output_field=BigIntegerField(),
    )
    # The rest a partial dispute left (:func:`holding`) goes to its one doer
    # less the fee PLATFORM_FEE_POLICY takes on it (a Python callable), as its release
    # computes it: one row per such payment, the others summed per currency.
    # A release a lost dispute caught in flight counts as the releasing
    # payment it was: what its transfer sends (the held net), not the rest.
    rest_of = Case(
        When(Q(status=S.DISPUTE_LOST) & ~release_caught_by_loss(), then=F("pk")),
        default=Value(None),
    )
    rows = (
        _payment_model()
        .objects.annotate(own_row=FilteredRelation("payees", condition=own_row))
        .filter(_any_of(arms), holding())
        .annotate(rest_of=rest_of)
        .order_by()
        .values("currency", "rest_of", "released_in_parts")
        .annotate(total=Sum(share), held=Sum(held_after_loss()))
    )
    amounts: dict[str, int] = {}
    in_parts: list[Any] = []
    for row in rows:
        currency = row["currency"]
        if row["rest_of"] is None:
            amount = int(row["total"] or 0)
        elif row["released_in_parts"]:
            # Its release is one more release in parts (the fee cumulative
            # over the earlier ones): read below, from the payments' releases.
            in_parts.append(row["rest_of"])
            continue
        else:
            amount, _fee = release_services.transfer_and_fee(int(row["held"]), currency)
        amounts[currency] = amounts.get(currency, 0) + amount
    if in_parts:
        # Three queries, whatever the number of such payments.
        rests = (
            _payment_model()
            .objects.filter(pk__in=in_parts)
            .prefetch_related("releases", "payees", "disputes")
        )
        for payment in rests:
            amount, _fee = release_services.rest_transfer_and_fee(payment)
            amounts[payment.currency] = amounts.get(payment.currency, 0) + amount
    return [
        {"currency": currency, "amount": amount, "formatted": format_money(amount, currency)}
        for currency, amount in sorted(amounts.items())
    ]


class AllocatedTo(Func):
    """A release's allocation to one payee row: ``allocations[str(payee_id)]``, 0 if none.

    ``allocations`` is the JSON object a release stores before any transfer
    (payee row id to minor units). The key is another column, so this is a
    per-database JSON lookup: PostgreSQL and SQLite, the databases the package
    supports.
    """

    output_field = BigIntegerField()

    def __init__(self, allocations: Any, payee_id: Any) -> None:
        super().__init__(allocations, payee_id)

    def _lookup(self, compiler: Any, connection: Any, pattern: str) -> tuple[str, list[Any]]:
        allocations, payee_id = self.get_source_expressions()
        document, document_params = compiler.compile(allocations)
        key, key_params = compiler.compile(payee_id)
        return pattern.format(document=document, key=key), [*document_params, *key_params]

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        return self._lookup(
            compiler,
            connection,
            "COALESCE(CAST(jsonb_extract_path_text({document}, CAST({key} AS text)) AS bigint), 0)",
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        return self._lookup(
            compiler,
            connection,
            "COALESCE(CAST(json_extract({document}, '$.\"' || {key} || '\"') AS INTEGER), 0)",
        )

    def as_sql(
        self,
        compiler: Any,
        connection: Any,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> Any:
        raise NotSupportedError(
            f"A release's allocation is read on PostgreSQL and SQLite, not {connection.vendor}."
        )


def unsent_shares_for_payee(payee: dict[str, Any]) -> list[dict[str, Any]]:
    """A payee's shares of releases not transferred to them yet, per currency.

    A release of a split payment leaves escrow when it starts
    (``amount_released``); each payee's share (the release's
    ``allocations``) then goes out as its own transfer. Until that transfer
    is made (in flight after a timeout, refused by Stripe, or not sent yet
    because an earlier payee's was not settled) the share is still on the
    platform's balance, and the next release request sends it: it counts as
    the payee's, in escrow. ``payee`` names the payee's rows by their fields
    (``{"user": user}`` or ``{"organization": organization}``). One row per
    (pending release, payee row): a share counts once, however many
    attempts were refused.

    A refund beyond what a payment held takes its part of a share not sent
    yet too (``REVERSAL_POLICY``, a Python callable): for a payment with
    refunds the amount is what
    :func:`~django_escrow_connect.services.releases.shares_owed` says the next
    release sends, the same figure. One query, and four more when some of
    the shares are on payments with refunds, whatever the data.
    """
    own_rows = swappable.load("EscrowPayee").objects.filter(**payee).order_by()
    # Terms refuse a payee listed twice, so a payment has at most one row of
    # this payee: a scalar subquery, no join that could multiply releases.
    own_row = Subquery(own_rows.filter(payment=OuterRef("payment")).values("pk")[:1])
    made = swappable.load("Transfer").objects.filter(
        release=OuterRef("pk"), payee=OuterRef("own_row"), status__in=PAID_TRANSFER_STATES
    )
    pending = (
        swappable.load("EscrowRelease")
        .objects.filter(
            # Driven by the payee's own rows (indexed), not by every pending release.
            payment__in=own_rows.values("payment"),
            status=ReleaseStatus.PENDING,
        )
        .annotate(own_row=own_row, share=AllocatedTo("allocations", "own_row"))
        .filter(
            Q(payment__status__in=OWING_STATES) | _rest_after_loss() | _in_flight_at_loss(),
            ~Exists(made),
            share__gt=0,
        )
        .order_by()
        .values("pk", "payment_id", "own_row", "currency", "share", "payment__amount_refunded")
    )
    rows = list(pending)
    refunded = {row["payment_id"] for row in rows if row["payment__amount_refunded"]}
    owed = release_services.shares_owed(refunded) if refunded else {}
    totals: dict[str, int] = {}
    for row in rows:
        share = row["share"]
        if row["payment_id"] in refunded:
            share = owed.get(row["pk"], {}).get(row["own_row"], 0)
        totals[row["currency"]] = totals.get(row["currency"], 0) + share
    return [
        {"currency": currency, "amount": amount, "formatted": format_money(amount, currency)}
        for currency, amount in sorted(totals.items())
    ]


def _rest_after_loss() -> Q:
    """A pending release of a ``dispute_lost`` payment that is the release of
    the rest its loss left (its transfer was begun after the loss,
    ``follow_up["after_loss"]``: in flight or refused), while no dispute of
    the payment is open: still the payee's, as the rest of a payment
    released at once is counted until its transfer is made. An earlier
    release the dispute caught is counted while its transfer is in flight
    (:func:`_in_flight_at_loss`), not once it is known unsent
    (docs/recovery.md)."""
    after_loss = (
        swappable.load("MoneyOperation")
        .objects.filter(
            payment=OuterRef("payment"), **{f"follow_up__{release_services.AFTER_LOSS}": True}
        )
        .values("idempotency_key")
    )
    sent_after_loss = swappable.load("Transfer").objects.filter(
        release=OuterRef("pk"), idempotency_key__in=after_loss
    )
    open_dispute = (
        swappable.load("Dispute")
        .objects.filter(payment=OuterRef("payment"))
        .exclude(status__in=list(DISPUTE_CLOSED_STATES))
    )
    return Q(Exists(sent_after_loss), ~Exists(open_dispute), payment__status=S.DISPUTE_LOST)


def _in_flight_at_loss() -> Q:
    """A pending release of a ``dispute_lost`` payment whose transfer to this
    payee (``own_row``) was in flight when the dispute opened and is still
    unanswered (:func:`~django_escrow_connect.holdings.release_in_flight`),
    while no dispute of the payment is open: not known unsent, Stripe may
    have made it. Counted as a release in flight of a payment released at
    once is (what its transfer sends) until Stripe's answer is recorded:
    made, it is in ``earnings``; not made, it is the unsent release settled
    by hand, and no longer counted."""
    open_dispute = (
        swappable.load("Dispute")
        .objects.filter(payment=OuterRef("payment"))
        .exclude(status__in=list(DISPUTE_CLOSED_STATES))
    )
    return Q(
        Exists(release_in_flight(payee=OuterRef("own_row"))),
        ~Exists(open_dispute),
        payment__status=S.DISPUTE_LOST,
    )


def added_up(*totals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-currency totals added up, in currency order, without the zeros."""
    amounts: dict[str, int] = {}
    for rows in totals:
        for row in rows:
            amounts[row["currency"]] = amounts.get(row["currency"], 0) + row["amount"]
    return [
        {"currency": currency, "amount": amount, "formatted": format_money(amount, currency)}
        for currency, amount in sorted(amounts.items())
        if amount
    ]


def earnings_totals(payee_filter: Q, payee_row_filter: Q) -> list[dict[str, Any]]:
    """What a payee earned, per currency, in two queries whatever the data.

    A payment released in parts (milestones, amounts, several payees) pays each
    payee by its own transfers, so the payee's earnings are those transfers
    less their reversals: a secondary payee earns its share, the first payee
    not the others'. A payment released at once counts its one transfer
    (``amount_transferred``, which is net of a destination charge's fee). A
    payment a dispute froze counts as the state the dispute returns it to
    (:func:`settled_in`): the payee keeps what was transferred before the
    dispute, also when it is lost.
    """
    whole = money_totals(
        _payment_model().objects.filter(
            payee_filter, settled_in(EARNING_STATES), released_in_parts=False
        ),
        F("amount_transferred") - F("amount_reversed"),
    )
    in_parts = money_totals(
        swappable.load("Transfer").objects.filter(
            payee_row_filter,
            settled_in(EARNING_STATES, prefix="payment__"),
            status__in=PAID_TRANSFER_STATES,
            payment__released_in_parts=True,
        ),
        F("amount") - F("amount_reversed"),
    )
    totals: dict[str, int] = {}
    for row in (*whole, *in_parts):
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["amount"]
    return [
        {"currency": currency, "amount": amount, "formatted": format_money(amount, currency)}
        for currency, amount in sorted(totals.items())
    ]


def money_totals(queryset: Any, expression: Any) -> list[dict[str, Any]]:
    """``expression`` summed per currency in the database: one query."""
    rows = (
        queryset.order_by().values("currency").annotate(total=Sum(expression)).order_by("currency")
    )
    return [
        {
            "currency": row["currency"],
            "amount": int(row["total"] or 0),
            "formatted": format_money(int(row["total"] or 0), row["currency"]),
        }
        for row in rows
    ]


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------


class CreatePaymentRequest(StrictSerializer):
    task_id = serializers.CharField(max_length=64)
    amount = MinorAmountField(
        required=False,
        help_text="Optional: the amount the customer saw. It must equal the task's terms.",
    )
    # Its range is the terms' (1 to the number of milestones): the service
    # checks it, with its own error code.
    milestone = serializers.IntegerField(
        required=False,
        help_text=(
            "Terms funded per milestone: which milestone (1-based) this payment pays for. "
            "Not allowed for terms paid up front."
        ),
    )
    save_payment_method = serializers.BooleanField(
        required=False,
        default=False,
        help_text="The customer agrees to save the card for later tips charged without them "
        "(needs SAVE_PAYMENT_METHODS; otherwise 400 saving_payment_methods_off).",
    )


class RefundRequest(StrictSerializer):
    amount = MinorAmountField(
        required=False, help_text="Minor units; omitted: everything still refundable."
    )
    reason = serializers.CharField(max_length=64, required=False, allow_blank=True)


class EmptyRequest(StrictSerializer):
    pass


class ReleaseRequest(StrictSerializer):
    """``{}`` (everything held), ``{"milestone_id"}`` or ``{"amount"}``: not both."""

    milestone_id = serializers.IntegerField(
        required=False, min_value=1, help_text="A milestone of the payment (its id)."
    )
    amount = MinorAmountField(
        required=False, help_text="Minor units, at most what is still held (no milestones)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "milestone_id" in attrs and "amount" in attrs:
            raise serializers.ValidationError(_("Give a milestone or an amount, not both."))
        return attrs


def _validated(serializer_class: type[serializers.Serializer[Any]], request: Request) -> Any:
    return validated(serializer_class, request.data)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


#: The payment's amounts, in minor units, each also in ``formatted``.
AMOUNT_FIELDS = (
    "amount",
    "platform_fee",
    "amount_refunded",
    "amount_transferred",
    "amount_reversed",
    "amount_disputed",
    "refundable_amount",
)
#: When the payment reached each step (null until it does).
TIMESTAMP_FIELDS = (
    "created_at",
    "updated_at",
    "held_at",
    "released_at",
    "refunded_at",
    "canceled_at",
    "failed_at",
    "disputed_at",
)
_STATUS_HELP = "One of: " + ", ".join(S.values) + " (docs/state-machine.md)."


class FormattedAmountsOutput(serializers.Serializer[Any]):
    """Each amount for people: ``format_money(amount, currency)``."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {name: serializers.CharField() for name in AMOUNT_FIELDS}

    def to_representation(self, instance: Any) -> dict[str, str]:
        return {
            name: format_money(getattr(instance, name), instance.currency) for name in AMOUNT_FIELDS
        }


class PayeeOutput(serializers.Serializer[Any]):
    """Who is paid: ``{"type": "user" | "organization", "id"}``."""

    type = serializers.ChoiceField(choices=["user", "organization"])
    id = serializers.CharField()

    def to_representation(self, instance: Any) -> dict[str, str]:
        if instance.payee_user_id is not None:
            return {"type": "user", "id": str(instance.payee_user_id)}
        return {"type": "organization", "id": str(instance.payee_organization_id)}


class FailureOutput(serializers.Serializer[Any]):
    """Why the last attempt failed (Stripe's code and message), or null."""

    code = serializers.CharField()
    message = serializers.CharField()

    # A nested serializer answering null for its whole object: DRF allows it, the stubs do not.
    def to_representation(self, instance: Any) -> dict[str, str] | None:  # type: ignore[override]
        if not (instance.failure_code or instance.failure_message):
            return None
        return {"code": instance.failure_code, "message": instance.failure_message}


class TransferOutput(serializers.Serializer[Any]):
    """One transfer as Stripe made it.

    A destination charge's transfer (manual capture) is the whole charge;
    Stripe takes ``application_fee`` back from it and returns
    ``application_fee_refunded`` with refunds. ``amount - application_fee``
    is the payment's ``amount_transferred`` and ``amount_reversed -
    application_fee_refunded`` its ``amount_reversed`` (the doer's share).
    Both are 0 for a transfer the app made (separate charges and transfers).
    """

    stripe_transfer_id = NullIfBlankCharField()
    status = serializers.CharField()
    amount = serializers.IntegerField()
    amount_reversed = serializers.IntegerField()
    application_fee = serializers.SerializerMethodField()
    application_fee_refunded = serializers.SerializerMethodField()
    currency = serializers.CharField()
    destination_account_id = serializers.CharField()
    created_at = IsoDateTimeField()

    # The payment comes from the prefetch that loaded its transfers (Django
    # caches the parent on each child), so these cost no query.
    def get_application_fee(self, transfer: Any) -> int:
        payment = transfer.payment
        return int(payment.platform_fee) if books.is_gross_transfer(payment, transfer.amount) else 0

    def get_application_fee_refunded(self, transfer: Any) -> int:
        payment = transfer.payment
        if not books.is_gross_transfer(payment, transfer.amount):
            return 0
        return books.application_fee_refunded(payment)


class RefundOutput(serializers.Serializer[Any]):
    id = serializers.CharField(source="pk")
    stripe_refund_id = NullIfBlankCharField()
    status = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    formatted = serializers.SerializerMethodField()
    reason = serializers.CharField()
    created_at = IsoDateTimeField()

    def get_formatted(self, refund: Any) -> str:
        return format_money(refund.amount, refund.currency)


class DisputeOutput(serializers.Serializer[Any]):
    stripe_dispute_id = serializers.CharField()
    tip = serializers.CharField(
        source="tip_id",
        allow_null=True,
        help_text="The id of the tip whose charge is disputed (as the tips endpoint gives it); "
        "null for a dispute of the payment's own charge.",
    )
    status = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    reason = serializers.CharField()
    evidence_due_by = IsoDateTimeField(allow_null=True)
    closed_at = IsoDateTimeField(allow_null=True)


class MilestoneOutput(serializers.Serializer[Any]):
    """One milestone of the payment (docs/milestones.md)."""

    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.CharField()
    due_date = serializers.DateField(allow_null=True)
    delivered_at = IsoDateTimeField(allow_null=True)
    released_at = IsoDateTimeField(allow_null=True)


class PayeeTransferOutput(serializers.Serializer[Any]):
    """One of a payee's transfers (one per release)."""

    release_id = serializers.IntegerField(allow_null=True)
    stripe_transfer_id = NullIfBlankCharField()
    status = serializers.CharField()
    amount = serializers.IntegerField()
    amount_reversed = serializers.IntegerField()


class SplitPayeeOutput(serializers.Serializer[Any]):
    """One payee of a split payment, their share and their transfers' status."""

    id = serializers.IntegerField(source="pk")
    type = serializers.SerializerMethodField()
    party_id = serializers.SerializerMethodField()
    basis_points = serializers.IntegerField(allow_null=True)
    amount = serializers.IntegerField(allow_null=True)
    transfers = PayeeTransferOutput(many=True, source="transfer_list")

    def get_type(self, payee: Any) -> str:
        return "user" if payee.user_id is not None else "organization"

    def get_party_id(self, payee: Any) -> str:
        return str(payee.user_id if payee.user_id is not None else payee.organization_id)


class TimestampsOutput(serializers.Serializer[Any]):
    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {name: IsoDateTimeField(allow_null=True) for name in TIMESTAMP_FIELDS}


class PaymentOutput(serializers.Serializer[Any]):
    """The public shape of a payment (docs/payments.md): the API's answer and its schema."""

    payment_id = serializers.CharField(source="pk")
    task_id = serializers.CharField()
    status = serializers.CharField(help_text=_STATUS_HELP)
    status_display = serializers.CharField(source="get_status_display")
    strategy = serializers.CharField()
    currency = serializers.CharField()
    amount = serializers.IntegerField()
    platform_fee = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    amount_transferred = serializers.IntegerField()
    amount_reversed = serializers.IntegerField()
    amount_disputed = serializers.IntegerField()
    amount_captured = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "Null: the whole amount (once captured). Set when a manual-capture hold was "
            "captured for less outside the app; the rest was never charged."
        ),
    )
    amount_released = serializers.IntegerField(
        help_text="Gross amount released to the payee(s), less refunds taken back from it."
    )
    amount_held = serializers.IntegerField(
        help_text="Still in escrow: amount_released + amount_refunded + amount_held "
        "+ amount_lost is the amount charged."
    )
    amount_lost = serializers.IntegerField(
        help_text="What a lost dispute took out of escrow (Stripe debited the platform); "
        "0 unless the status is dispute_lost."
    )
    refundable_amount = serializers.IntegerField(
        help_text="What a refund may ask for now: the amount charged less amount_refunded; "
        "0 while a dispute decides the payment (disputed, dispute_lost), whose refund is "
        "refused (409)."
    )
    formatted = FormattedAmountsOutput(source="*")
    payer_id = serializers.CharField()
    payee = PayeeOutput(source="*")
    stripe_payment_intent_id = NullIfBlankCharField()
    capture_before = IsoDateTimeField(allow_null=True)
    failure = FailureOutput(source="*", allow_null=True)
    transfers = TransferOutput(many=True)
    milestones = MilestoneOutput(many=True)
    funded_milestone = serializers.SerializerMethodField(
        help_text=(
            "Terms funded per milestone: the milestone (1-based) this payment pays for; "
            "null for a payment of the whole task."
        )
    )
    payees = SplitPayeeOutput(
        many=True, help_text="Empty unless the payment has milestones or several payees."
    )
    refunds = RefundOutput(many=True)
    disputes = DisputeOutput(many=True)
    timestamps = TimestampsOutput(source="*")

    def get_funded_milestone(self, payment: Any) -> int | None:
        return payment.funded_milestone or None


def serialize_payment(payment: Any) -> dict[str, Any]:
    """The public shape of a payment (:class:`PaymentOutput`)."""
    return dict(PaymentOutput(payment).data)


def serialize_payments(payments: Any) -> list[dict[str, Any]]:
    """:func:`serialize_payment` of each, through one serializer.

    A serializer instance deep-copies its declared fields (about thirty, with
    the nested ones) when first used: one instance per row made that copy the
    largest cost of a list page. ``many=True`` binds a single child.
    """
    return [dict(row) for row in PaymentOutput(payments, many=True).data]


class PaymentStartOutput(serializers.Serializer[Any]):
    """What the browser needs to collect the card: returned, never stored or logged."""

    payment_id = serializers.CharField(source="payment.pk")
    client_secret = serializers.CharField(
        allow_null=True, help_text="For Stripe.js only; never store or log it."
    )
    # Stripe.js needs both: stripe = Stripe(publishable_key), then
    # stripe.confirmPayment({clientSecret}).
    publishable_key = serializers.SerializerMethodField(
        help_text="STRIPE_PUBLISHABLE_KEY (pk_...), for Stripe(...) in the browser; "
        "null when not configured.",
    )
    amount = serializers.IntegerField(source="payment.amount")
    currency = serializers.CharField(source="payment.currency")
    status = serializers.CharField(source="payment.status", help_text=_STATUS_HELP)

    def get_publishable_key(self, start: Any) -> str | None:
        return escrow_settings.STRIPE_PUBLISHABLE_KEY or None


def serialize_start(start: payment_services.PaymentStart) -> dict[str, Any]:
    return dict(PaymentStartOutput(start).data)


def serialize_account(account: Any) -> dict[str, Any] | None:
    if account is None:
        return None
    return {
        "stripe_account_id": account.stripe_account_id or None,
        "status": account.status,
        "charges_enabled": account.charges_enabled,
        "payouts_enabled": account.payouts_enabled,
        "details_submitted": account.details_submitted,
        "can_receive_transfers": account.can_transfer,
        "requirements_currently_due": list(account.requirements_currently_due or []),
        "requirements_past_due": list(account.requirements_past_due or []),
        "disabled_reason": account.disabled_reason or None,
    }


class MoneyTotalOutput(serializers.Serializer[Any]):
    currency = serializers.CharField()
    amount = serializers.IntegerField(help_text="Minor units.")
    formatted = serializers.CharField()


class PaymentPageOutput(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = PaymentOutput(many=True)


class TaskDoerDashboardOutput(serializers.Serializer[Any]):
    payee = serializers.DictField(child=serializers.CharField())
    account = serializers.DictField(allow_null=True)
    payments = PaymentOutput(many=True)
    earnings = MoneyTotalOutput(
        many=True,
        help_text="Transferred to the payee less reversed, per currency; a transfer made "
        "before a dispute counts while it is open and after it is lost.",
    )
    in_escrow = MoneyTotalOutput(
        many=True,
        help_text="Per currency: the payee's share of what held, releasing and partially "
        "released payments hold, less the platform fee, and of releases not transferred "
        "yet; and the rest a partial dispute lost left held (dispute_lost, released at "
        "once or in parts to one payee without milestones), less the fee its release "
        "takes, until it is transferred. Nothing else of a "
        "disputed or dispute_lost payment (its amount_held, a share not transferred yet): "
        "the app releases and transfers nothing of it while a dispute decides it "
        "(counted again when the dispute or its appeal is won); a release whose transfer "
        "was in flight when the dispute opened counts until Stripe's answer is recorded.",
    )


class CustomerDashboardOutput(serializers.Serializer[Any]):
    payments = PaymentOutput(many=True)
    spent = MoneyTotalOutput(
        many=True,
        help_text="Charged less refunded, per currency; a dispute_lost payment less the "
        "disputed amount its lost dispute gave back (never below 0).",
    )
    in_escrow = MoneyTotalOutput(
        many=True,
        help_text="The sum of amount_held of the payments not released yet, per currency: "
        "held, releasing and partially released, also while a dispute decides them "
        "(disputed, dispute_lost).",
    )


_ERROR_DESCRIPTIONS = {
    400: "Invalid input.",
    402: "The card was declined.",
    403: "Not signed in, or not allowed to do this to a payment you can see.",
    404: "No such payment or organization (or not one you may see).",
    409: "The payment's state does not allow this.",
    503: "Stripe is not reachable or its answer is pending; retry.",
}


def _errors(*statuses: int) -> dict[int, Any]:
    """The documented error responses (one shape: ``{"error": {"code", "message"}}``)."""
    return error_responses(_ERROR_DESCRIPTIONS, *statuses)


_READ_ERRORS = _errors(400, 403, 404)
_ACTION_ERRORS = _errors(400, 402, 403, 404, 409, 503)
_CREATE_ERRORS = {
    **_ACTION_ERRORS,
    **error_responses(
        {
            409: "The task cannot be paid as it stands (codes include no_payment_terms: no "
            "agreed terms, or a price or milestone Stripe cannot charge, below its smallest "
            "or above its largest charge, refused before or by Stripe; already_paid; "
            "terms_changed; funding_mode_mismatch; previous_milestone_unpaid; "
            "payment_not_created; operation_pending)."
        },
        409,
    ),
}

_ORGANIZATION_PARAMETER = OpenApiParameter(
    "organization_id",
    str,
    required=False,
    description="An organization you administer: its payments instead of your own.",
)
_LIMIT_PARAMETER = OpenApiParameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": DASHBOARD_MAX_LIMIT},
    required=False,
    description=f"Latest payments shown (1-{DASHBOARD_MAX_LIMIT}).",
)


# --------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------


class PaymentPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_number(self, request: Any, paginator: Any) -> Any:
        # DRF reads a blank ``page=`` as the first page; it is no page number,
        # so it is refused like ``page=abc`` (404 "Invalid page.").
        if request.query_params.get(self.page_query_param) == "":
            return ""
        return super().get_page_number(request, paginator)


class PaymentAPIView(EscrowAPIView):
    """Base of the payment views: authenticated users only.

    The views run outside ``ATOMIC_REQUESTS``: a service commits what it has
    learnt from Stripe (a failed transfer, an outcome still unknown) before
    it answers with an error, and an outer request transaction would roll
    that record back.
    """

    permission_classes = [IsAuthenticated]
    schema = view_schema()

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return transaction.non_atomic_requests(super().as_view(**initkwargs))


class PaymentCreateView(PaymentAPIView):
    """``POST payments/create/``: start paying for a task (idempotent per task)."""

    @extend_schema(
        request=CreatePaymentRequest,
        responses={201: PaymentStartOutput, 200: PaymentStartOutput, **_CREATE_ERRORS},
        summary="Create the escrow payment of a task",
    )
    def post(self, request: Request) -> Response:
        data = _validated(CreatePaymentRequest, request)
        start = payment_services.create_payment(
            data["task_id"],
            request.user,
            expected_amount=data.get("amount"),
            milestone=data.get("milestone"),
            save_payment_method=data.get("save_payment_method", False),
        )
        return Response(
            serialize_start(start),
            status=status.HTTP_201_CREATED if start.created else status.HTTP_200_OK,
        )


class PaymentDetailView(PaymentAPIView):
    """``GET payments/{payment_id}/``."""

    @extend_schema(
        responses={200: PaymentOutput, **_READ_ERRORS},
        summary="A payment",
        operation_id="payments_retrieve",
    )
    def get(self, request: Request, payment_id: str) -> Response:
        return Response(
            serialize_payment(get_visible_payment(request.user, payment_id, details=True))
        )


class PaymentListView(PaymentAPIView):
    """``GET payments/?organization_id=&role=customer|task_doer``, newest first."""

    @extend_schema(
        responses={200: PaymentPageOutput, **_READ_ERRORS},
        summary="Payments, newest first",
        operation_id="payments_list",
        parameters=[
            OpenApiParameter("role", str, enum=["customer", "task_doer"], required=False),
            _ORGANIZATION_PARAMETER,
            OpenApiParameter("page", int, required=False),
            OpenApiParameter("page_size", int, required=False),
            OpenApiParameter(
                "task_id",
                str,
                required=False,
                description=(
                    "Only this task's payments (each milestone's, when funded per milestone)."
                ),
            ),
        ],
    )
    def get(self, request: Request) -> Response:
        user = request.user
        role = request.query_params.get("role") or None
        if role not in (None, "customer", "task_doer"):
            raise errors.InvalidInput(
                _("role must be 'customer' or 'task_doer'."), code="invalid_role"
            )
        organization_id = request.query_params.get("organization_id") or None
        if organization_id is not None:
            if role == "customer":
                raise errors.InvalidInput(
                    _("An organization is paid, it does not pay: use role=task_doer."),
                    code="invalid_role",
                )
            organization = administered_organization(user, organization_id)
            arms = _paid_to_organization(organization)
        elif role == "customer":
            arms = [Q(payer=user)]
        elif role == "task_doer":
            arms = _paid_to_user(user)
        else:
            arms = visible_to(user)
        narrow = Q()
        task_id = request.query_params.get("task_id") or None
        if task_id is not None:
            narrow = Q(task_id=_task_key(task_id))
        payments = newest_first(arms, narrow, prepare=with_details)
        paginator = PaymentPagination()
        page = paginator.paginate_queryset(payments, request, view=self)
        # paginate_queryset answers None only when pagination is off; it is on here.
        assert page is not None
        return paginator.get_paginated_response(serialize_payments(page))


def _task_key(raw: str) -> Any:
    """``raw`` as a task's primary key, else 400 ``invalid_task_id``.

    An id no task can have is refused before any query, beyond the
    column's range included: SQLite cannot bind an integer past 64 bits
    (``OverflowError``, a 500), and PostgreSQL's ``integer`` ends at 2**31.
    """
    field = _payment_model()._meta.get_field("task").target_field
    try:
        value = field.to_python(raw)
        # The range validators of an integer key (the database's bounds).
        field.run_validators(value)
    except (ValueError, TypeError, DjangoValidationError):
        raise errors.InvalidInput(_("No such task."), code="invalid_task_id") from None
    return value


class _PaymentActionView(PaymentAPIView):
    """A POST that changes one payment the user can see."""

    request_serializer: type[serializers.Serializer[Any]] = EmptyRequest

    def post(self, request: Request, payment_id: str) -> Response:
        payment = get_visible_payment(request.user, payment_id)
        data = _validated(self.request_serializer, request)
        return self.act(request, payment, data)

    def act(self, request: Request, payment: Any, data: Any) -> Response:  # pragma: no cover
        raise NotImplementedError

    def respond(self, payment: Any) -> Response:
        fresh = with_details(_payment_model().objects.filter(pk=payment.pk)).get()
        return Response(serialize_payment(fresh))


class PaymentConfirmView(_PaymentActionView):
    """``POST payments/confirm/{payment_id}/``: the customer confirms the work; release."""

    @extend_schema(
        request=None,
        responses={200: PaymentOutput, **_ACTION_ERRORS},
        summary="Release a payment",
    )
    def post(self, request: Request, payment_id: str) -> Response:
        return super().post(request, payment_id)

    def act(self, request: Request, payment: Any, data: Any) -> Response:
        return self.respond(payment_services.release_payment(payment.pk, request.user))


class PaymentReleaseView(_PaymentActionView):
    """``POST payments/{payment_id}/release/`` ``{}`` | ``{milestone_id}`` | ``{amount}``."""

    request_serializer = ReleaseRequest

    @extend_schema(
        request=ReleaseRequest,
        responses={200: PaymentOutput, **_ACTION_ERRORS},
        summary="Release a milestone, an amount, or everything held",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request: Request, payment_id: str) -> Response:
        return super().post(request, payment_id)

    def act(self, request: Request, payment: Any, data: Any) -> Response:
        # A release by amount sent again is a second release: the client's
        # key tells a retry from a new request (a milestone or everything
        # held is released once whatever the key).
        released = payment_services.release_payment(
            payment.pk,
            request.user,
            milestone_id=data.get("milestone_id"),
            amount=data.get("amount"),
            request_key=idempotency_key(request),
        )
        return self.respond(released)


class MilestoneDeliverView(PaymentAPIView):
    """``POST payments/{payment_id}/milestones/{milestone_id}/deliver/``: the doer is done."""

    @extend_schema(
        request=None,
        responses={200: PaymentOutput, **_ACTION_ERRORS},
        summary="Mark a milestone delivered",
    )
    def post(self, request: Request, payment_id: str, milestone_id: str) -> Response:
        payment = get_visible_payment(request.user, payment_id)
        validated(EmptyRequest, request.data)
        release_services.deliver_milestone(payment.pk, milestone_id, request.user)
        fresh = with_details(_payment_model().objects.filter(pk=payment.pk)).get()
        return Response(serialize_payment(fresh))


class PaymentRefundView(_PaymentActionView):
    """``POST payments/{payment_id}/refund/`` ``{amount?, reason?}``."""

    request_serializer = RefundRequest

    @extend_schema(
        request=RefundRequest,
        responses={200: PaymentOutput, **_ACTION_ERRORS},
        summary="Refund",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request: Request, payment_id: str) -> Response:
        return super().post(request, payment_id)

    def act(self, request: Request, payment: Any, data: Any) -> Response:
        # A partial refund sent again is a second refund: the client's key
        # tells a retry from a new request.
        refunded = payment_services.refund_payment(
            payment.pk,
            request.user,
            amount=data.get("amount"),
            reason=data.get("reason", ""),
            request_key=idempotency_key(request),
        )
        return self.respond(refunded)


class PaymentCancelView(_PaymentActionView):
    """``POST payments/{payment_id}/cancel/``: before money moved (or void a hold)."""

    @extend_schema(
        request=None,
        responses={200: PaymentOutput, **_ACTION_ERRORS},
        summary="Cancel a payment",
    )
    def post(self, request: Request, payment_id: str) -> Response:
        return super().post(request, payment_id)

    def act(self, request: Request, payment: Any, data: Any) -> Response:
        return self.respond(payment_services.cancel_payment(payment.pk, request.user))


class PaymentRetryView(_PaymentActionView):
    """``POST payments/{payment_id}/retry/``: pay again after a failed attempt."""

    @extend_schema(
        request=None,
        responses={200: PaymentStartOutput, **_ACTION_ERRORS},
        summary="Retry a payment",
    )
    def post(self, request: Request, payment_id: str) -> Response:
        return super().post(request, payment_id)

    def act(self, request: Request, payment: Any, data: Any) -> Response:
        return Response(serialize_start(payment_services.retry_payment(payment.pk, request.user)))


def _dashboard_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DASHBOARD_DEFAULT_LIMIT
    # The length bound keeps int() away from Python's 4300-digit conversion
    # limit (a ValueError past it); leading zeros are still a number.
    digits = raw.lstrip("0")
    if (
        not raw.isascii()
        or not raw.isdigit()
        or len(digits) > len(str(DASHBOARD_MAX_LIMIT))
        or not 1 <= int(digits or "0") <= DASHBOARD_MAX_LIMIT
    ):
        raise errors.InvalidInput(
            _("limit must be a whole number from 1 to %(max)s.") % {"max": DASHBOARD_MAX_LIMIT},
            code="invalid_limit",
        )
    return int(digits)


class TaskDoerDashboardView(PaymentAPIView):
    """``GET dashboard/task-doer/?organization_id=``: account, latest payments, earnings."""

    @extend_schema(
        responses={200: TaskDoerDashboardOutput, **_READ_ERRORS},
        summary="The task doer's dashboard",
        parameters=[_ORGANIZATION_PARAMETER, _LIMIT_PARAMETER],
    )
    def get(self, request: Request) -> Response:
        user = request.user
        limit = _dashboard_limit(request)
        organization_id = request.query_params.get("organization_id") or None
        Account = swappable.load("ConnectedAccount")
        if organization_id is not None:
            organization = administered_organization(user, organization_id)
            payee = {"type": "organization", "id": str(organization.pk)}
            arms = _paid_to_organization(organization)
            account = Account.objects.filter(owner_organization=organization).first()
            own_row = Q(payees__organization=organization)
            own_payee: dict[str, Any] = {"organization": organization}
            earnings = earnings_totals(
                Q(payee_organization=organization), Q(payee__organization=organization)
            )
        else:
            payee = {"type": "user", "id": str(user.pk)}
            arms = _paid_to_user(user)
            account = Account.objects.filter(owner_user=user).first()
            own_row = Q(payees__user=user)
            own_payee = {"user": user}
            earnings = earnings_totals(Q(payee_user=user), Q(payee__user=user))
        latest = newest_first(arms, Q(), prepare=with_details)[:limit]
        return Response(
            {
                "payee": payee,
                "account": serialize_account(account),
                "payments": serialize_payments(latest),
                "earnings": earnings,
                "in_escrow": added_up(
                    in_escrow_for_payee(arms, own_row), unsent_shares_for_payee(own_payee)
                ),
            }
        )


class CustomerDashboardView(PaymentAPIView):
    """``GET dashboard/customer/``: latest payments, total spent net of refunds."""

    @extend_schema(
        responses={200: CustomerDashboardOutput, **_READ_ERRORS},
        summary="The customer's dashboard",
        parameters=[_LIMIT_PARAMETER],
    )
    def get(self, request: Request) -> Response:
        limit = _dashboard_limit(request)
        payments = _payment_model().objects.filter(payer=request.user)
        latest = with_details(payments.order_by("-created_at", "-pk"))[:limit]
        return Response(
            {
                "payments": serialize_payments(latest),
                # added_up leaves out a currency whose total is 0 (e.g. all
                # of it back with the customer by refunds or a lost dispute).
                "spent": added_up(
                    money_totals(payments.filter(status__in=SPENDING_STATES), spent())
                ),
                "in_escrow": added_up(
                    money_totals(payments.filter(settled_in(ESCROW_STATES)), held_after_loss())
                ),
            }
        )
