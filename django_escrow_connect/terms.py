"""Where a payment's amount and parties come from: the host's task, never
the request.

The default adapter asks the task (``task.get_escrow_terms()``, see
:class:`~django_escrow_connect.base.models.EscrowTaskMixin`). A host that
prefers not to put this on the model names its own callable in
``ESCROW_CONNECT["PAYMENT_TERMS"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from .conf import escrow_settings
from .money import (
    InvalidAmount,
    InvalidCurrency,
    amount_step,
    normalize_currency,
    validate_minor_amount,
)

# Django's gettext once settings and apps are ready, the English text before
# (terms made in a script or at import time stay an InvalidAmount).
from .money import _ as gettext

__all__ = [
    "BASIS_POINTS_WHOLE",
    "FUNDING_MODES",
    "FUND_PER_MILESTONE",
    "FUND_UP_FRONT",
    "EscrowTerms",
    "InvalidTerms",
    "MilestoneTerms",
    "PayeeShare",
    "TermsUnavailable",
    "get_terms",
    "proportional_reversals",
    "split_amount",
    "terms_from_task",
]


logger = logging.getLogger("django_escrow_connect.payments")


class InvalidTerms(InvalidAmount):
    """:class:`EscrowTerms` with a value that cannot be paid as it stands.

    The values come from the host's data (a bid, a milestone, an agreed
    share a user typed): a currency code that is not three letters, an
    amount Stripe cannot charge or send (not a whole
    króna, a three-decimal amount not ending in 0, zero), a milestone with
    an empty or blank name, an ``auto_release_after`` that is not positive,
    milestones that do not add up to the amount, a payee's share that is not
    positive, shares in basis points that do not add up to 100 %, a payee
    listed twice. Raised by :class:`EscrowTerms` with
    its ``payer``, so :func:`get_terms` can tell that user why (the API's
    ``409 no_payment_terms``) instead of failing the request; validate these
    where users enter them
    (:func:`~django_escrow_connect.money.validate_minor_amount` for prices)
    so it never happens. An :class:`~django_escrow_connect.money.InvalidAmount`
    (and so a ``ValueError``), as before; for a malformed currency code also
    an :class:`~django_escrow_connect.money.InvalidCurrency`, as before.
    """

    def __init__(self, *args: Any, payer: Any = None) -> None:
        super().__init__(*args)
        self.payer = payer


class _InvalidCurrencyTerms(InvalidTerms, InvalidCurrency):
    """:class:`InvalidTerms` for a currency code that is not three letters.

    Also an :class:`~django_escrow_connect.money.InvalidCurrency`, which
    :class:`EscrowTerms` raised for it before it became ``InvalidTerms``.
    """


class TermsUnavailable(Exception):
    """The task cannot be paid for now (no accepted bid, already paid, ...).

    ``payer``: who pays for the task once it can be paid (its customer),
    when the hook knows. Only that user is told why (the API's ``409
    no_payment_terms`` with this message); anyone else, and everyone when
    ``payer`` is not given, gets the answer of a task that does not exist
    (``404``), so a stranger cannot learn whether a task has an accepted bid.
    """

    def __init__(self, *args: Any, payer: Any = None) -> None:
        super().__init__(*args)
        self.payer = payer


#: 10000 basis points = 100 % of a release's net.
BASIS_POINTS_WHOLE = 10_000

#: ``EscrowTerms.funding``: one PaymentIntent for the whole task, released
#: milestone by milestone (the default), or one per milestone.
FUND_UP_FRONT = "up_front"
FUND_PER_MILESTONE = "per_milestone"
FUNDING_MODES = (FUND_UP_FRONT, FUND_PER_MILESTONE)


@dataclass(frozen=True)
class MilestoneTerms:
    """One milestone of a task: a part of the amount released on its own.

    ``amount`` is an int in minor units. ``auto_release_after`` (off when
    None) releases the milestone that long after the doer marked it delivered.

    Only the types are checked here (``ValueError``: the host's code must
    pass a str name, an int amount, a timedelta or None). The values are
    checked by the :class:`EscrowTerms` the milestone is given to, which
    knows the currency and the payer: an empty or blank name, a zero,
    negative or off-step amount, an ``auto_release_after`` of zero or less
    (values a user typed) are an :class:`InvalidTerms` the payer is told
    about, not a failed request.
    """

    name: str
    amount: int
    due_date: date | None = None
    auto_release_after: timedelta | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError("MilestoneTerms.name must be a str")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise ValueError("MilestoneTerms.amount must be an int in minor units")
        if self.auto_release_after is not None and not isinstance(
            self.auto_release_after, timedelta
        ):
            raise ValueError("MilestoneTerms.auto_release_after must be a timedelta or None")


@dataclass(frozen=True)
class PayeeShare:
    """One payee of a split payment and their share of each release's net.

    Exactly one of ``user`` and ``organization``; exactly one of
    ``basis_points`` (of the net, 10000 = 100 %) and ``amount`` (minor units
    of the whole payment's net, the amount less the platform fee), an int
    (``ValueError`` otherwise). All payees of one payment use the same kind
    of share. The share's value is checked by the :class:`EscrowTerms` it is
    given to: one of zero or less (a share a user typed) is an
    :class:`InvalidTerms` its payer is told about.
    """

    user: Any = None
    organization: Any = None
    basis_points: int | None = None
    amount: int | None = None

    def __post_init__(self) -> None:
        if (self.user is None) == (self.organization is None):
            raise ValueError("PayeeShare needs exactly one of user and organization")
        if (self.basis_points is None) == (self.amount is None):
            raise ValueError("PayeeShare needs exactly one of basis_points and amount")
        share = self.basis_points if self.basis_points is not None else self.amount
        if isinstance(share, bool) or not isinstance(share, int):
            raise ValueError("PayeeShare shares must be ints")

    @property
    def payee(self) -> Any:
        return self.user if self.user is not None else self.organization

    @property
    def weight(self) -> int:
        """What the split is proportional to (basis points or amount)."""
        return int(self.basis_points if self.basis_points is not None else self.amount or 0)


def split_amount(total: int, weights: Sequence[int], *, unit: int = 1) -> list[int]:
    """Split ``total`` minor units in proportion to ``weights``, exactly.

    Largest remainder: each share is first rounded down; the minor units
    left over go one each to the shares with the largest fractional
    remainder, ties to the earlier share (the first payee). The result
    always sums to ``total``.

    ``unit`` (:func:`~django_escrow_connect.money.amount_step`: 10 for a
    three-decimal currency, whose Stripe amounts end in 0, 100 for ISK, whose
    Stripe amounts are whole krónur) is what the shares
    move in: ``total`` is split in whole units, and only what it has beyond a
    multiple of ``unit`` (nothing, for an amount Stripe accepts) is added to
    the share that took the first leftover unit.
    """
    whole = sum(weights)
    if total < 0 or whole <= 0 or any(w < 0 for w in weights) or unit < 1:
        raise ValueError("split_amount needs a non-negative total and positive weights")
    units, odd = divmod(total, unit)
    shares = [units * w // whole for w in weights]
    remainders = [units * w % whole for w in weights]
    left = units - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    shares = [share * unit for share in shares]
    shares[order[0]] += odd
    return shares


def proportional_reversals(*, release: Any, transfers: Sequence[Any], amount: int) -> list[int]:
    """The default ``REVERSAL_POLICY``: ``amount`` over a release's payees in
    proportion to each one's allocation of it (:func:`split_amount`)."""
    if not transfers:
        return []
    # The allocation, not the transfer: a payee paid after a refund got less
    # than it, and the division must not change with who was paid when.
    allocations = getattr(release, "allocations", None) or {}
    return split_amount(
        amount,
        [int(allocations.get(str(t.payee_id), t.amount)) for t in transfers],
        unit=amount_step(release.currency),
    )


@dataclass(frozen=True)
class EscrowTerms:
    """Who pays whom, how much, in which currency.

    ``amount`` is an int in the currency's minor unit. Exactly one of
    ``payee_user`` and ``payee_organization`` is set, or neither when
    ``payees`` lists several (the first payee then stands for the payment's
    payee in lists and permissions).

    ``milestones`` (optional) divide the amount into parts released one by
    one; their amounts sum to ``amount``, and each
    has a name that is not blank, an amount that is positive and one Stripe
    can charge, and an ``auto_release_after`` that is None or positive
    (:class:`InvalidTerms` otherwise, as for ``amount``). ``payees``
    (optional) split every release between several payees, none listed
    twice; each share is positive and shares in basis points add up to
    10000 (:class:`InvalidTerms` otherwise); amount shares must cover
    exactly the net, which ``create_payment`` checks (``400
    split_mismatch``; see :class:`PayeeShare` and :func:`split_amount`).
    Terms with neither behave exactly as before milestones existed.

    ``funding`` is :data:`FUND_UP_FRONT` (one payment for the whole amount)
    or :data:`FUND_PER_MILESTONE` (each milestone paid for on its own, see
    docs/milestones.md): that needs milestones, and payees' shares in basis
    points (an amount share is of the whole task's net, which no single
    milestone's payment has).
    """

    payer: Any
    amount: int
    currency: str
    payee_user: Any = None
    payee_organization: Any = None
    description: str = ""
    milestones: Sequence[MilestoneTerms] = ()
    payees: Sequence[PayeeShare] = ()
    funding: str = FUND_UP_FRONT

    def __post_init__(self) -> None:
        try:
            self._validate()
        except InvalidTerms:
            raise
        except InvalidCurrency as exc:
            # A currency a user picked can be malformed as a price can be
            # mistyped: the payer is told, the request does not fail. Still an
            # InvalidCurrency for host code that catches that. Said here, not
            # by normalize_currency(), to be in the payer's language.
            raise _InvalidCurrencyTerms(
                gettext("Invalid currency code %(code)s: expected three letters.")
                % {"code": repr(self.currency)},
                payer=self.payer,
            ) from exc
        except InvalidAmount as exc:
            raise InvalidTerms(str(exc), payer=self.payer) from exc

    def _validate(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "payees", tuple(self.payees))
        if self.payees and self.payee_user is None and self.payee_organization is None:
            first = self.payees[0]
            object.__setattr__(self, "payee_user", first.user)
            object.__setattr__(self, "payee_organization", first.organization)
        if (self.payee_user is None) == (self.payee_organization is None):
            raise ValueError("EscrowTerms needs exactly one of payee_user and payee_organization")
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        validate_minor_amount(self.amount, self.currency)
        if self.amount <= 0:
            raise InvalidAmount(
                gettext("The amount must be positive, got %(amount)d.") % {"amount": self.amount}
            )
        if self.milestones:
            for number, milestone in enumerate(self.milestones, start=1):
                self._validate_milestone(number, milestone)
            total = sum(m.amount for m in self.milestones)
            if total != self.amount:
                # Milestone prices a user typed beside a task's price.
                raise InvalidTerms(
                    gettext("The milestones add up to %(total)d, not to the amount %(amount)d.")
                    % {"total": total, "amount": self.amount},
                    payer=self.payer,
                )
        if self.payees:
            self._validate_payees()
        if self.funding not in FUNDING_MODES:
            raise ValueError(f"EscrowTerms.funding must be one of {', '.join(FUNDING_MODES)}")
        if self.funding == FUND_PER_MILESTONE:
            if not self.milestones:
                raise ValueError("EscrowTerms.funding per_milestone needs milestones")
            if self.payees_by_amount:
                raise ValueError(
                    "EscrowTerms.funding per_milestone needs payees' shares in basis_points"
                )

    def _validate_milestone(self, number: int, milestone: MilestoneTerms) -> None:
        # Checked before the sum: amounts a user typed (0 and 10,000 of
        # 10,000) can add up and still not be payable. The name first: the
        # other messages name the milestone by it.
        if not milestone.name.strip():
            raise InvalidTerms(
                gettext("Milestone %(number)d has no name.") % {"number": number},
                payer=self.payer,
            )
        try:
            validate_minor_amount(milestone.amount, self.currency)
        except InvalidAmount as exc:
            raise InvalidAmount(
                gettext("Milestone %(name)s: %(reason)s")
                % {"name": repr(milestone.name), "reason": exc}
            ) from exc
        if milestone.amount <= 0:
            raise InvalidAmount(
                gettext("Milestone %(name)s: amount must be positive, got %(amount)d.")
                % {"name": repr(milestone.name), "amount": milestone.amount}
            )
        delay = milestone.auto_release_after
        if delay is not None and delay <= timedelta(0):
            raise InvalidTerms(
                gettext(
                    "Milestone %(name)s: the delay before its automatic release must be "
                    "positive, got %(delay)s."
                )
                % {"name": repr(milestone.name), "delay": delay},
                payer=self.payer,
            )

    def _validate_payees(self) -> None:
        first = self.payees[0]
        if (first.user, first.organization) != (self.payee_user, self.payee_organization):
            raise ValueError("EscrowTerms.payee_user/payee_organization must be the first payee")
        by_points = [p.basis_points is not None for p in self.payees]
        if any(by_points) and not all(by_points):
            raise ValueError("EscrowTerms.payees must all use basis_points or all use amount")
        for number, payee in enumerate(self.payees, start=1):
            # Before the sum: a partner's share typed as 0 (and the lead's
            # 100 %) adds up and still pays that payee nothing.
            if payee.weight <= 0:
                raise InvalidTerms(
                    gettext("Payee %(number)d: the share must be positive, got %(share)d.")
                    % {"number": number, "share": payee.weight},
                    payer=self.payer,
                )
        points = sum(p.weight for p in self.payees)
        if all(by_points) and points != BASIS_POINTS_WHOLE:
            # Partners' percentages a user typed (60 % and 30 %).
            raise InvalidTerms(
                gettext(
                    "The payees' shares add up to %(total)s basis points, not to 10000 (100 %%)."
                )
                % {"total": points},
                payer=self.payer,
            )
        for number, payee in enumerate(self.payees, start=1):
            # An agreed amount is what the payee expects to be paid: one
            # Stripe cannot send (a fraction of a króna, a KWD amount not
            # ending in 0) would only be approximated by the division.
            if payee.amount is None:
                continue
            try:
                validate_minor_amount(payee.amount, self.currency)
            except InvalidAmount as exc:
                raise InvalidAmount(
                    gettext("Payee %(number)d: %(reason)s") % {"number": number, "reason": exc}
                ) from exc
        seen = set()
        for number, payee in enumerate(self.payees, start=1):
            key = (
                ("user", payee.user.pk)
                if payee.user is not None
                else (
                    "organization",
                    payee.organization.pk,
                )
            )
            if key in seen:
                # The same partner picked twice in a form.
                raise InvalidTerms(
                    gettext("Payee %(number)d is listed twice.") % {"number": number},
                    payer=self.payer,
                )
            seen.add(key)
        # Amount shares must cover the net exactly; the net needs the fee
        # policy, so create_payment checks it (payees_by_amount).

    @property
    def payees_by_amount(self) -> bool:
        return bool(self.payees) and self.payees[0].amount is not None

    @property
    def is_split(self) -> bool:
        """Several payees, or milestones: released by the split release path."""
        return len(self.payees) > 1 or bool(self.milestones)

    @property
    def payee(self) -> Any:
        return self.payee_user if self.payee_user is not None else self.payee_organization

    @property
    def funded_per_milestone(self) -> bool:
        return self.funding == FUND_PER_MILESTONE

    def for_milestone(self, index: int) -> EscrowTerms:
        """The terms of the ``index``-th milestone (1-based) paid for on its own.

        Its amount is the milestone's; it has that one milestone and the same
        parties and payees' shares, so its payment is an ordinary one.
        """
        milestone = self.milestones[index - 1]
        description = (
            f"{self.description}: {milestone.name}" if self.description else milestone.name
        )
        return replace(
            self,
            amount=milestone.amount,
            milestones=(milestone,),
            description=description,
            funding=FUND_UP_FRONT,
        )


def terms_from_task(task: Any) -> EscrowTerms:
    """The default terms hook: ask the task (``task.get_escrow_terms()``)."""
    terms = task.get_escrow_terms()
    if not isinstance(terms, EscrowTerms):
        raise TypeError(
            f"{type(task).__name__}.get_escrow_terms() must return EscrowTerms, "
            f"not {type(terms).__name__}"
        )
    return terms


def get_terms(task: Any) -> EscrowTerms:
    """The terms of ``task`` from the configured ``PAYMENT_TERMS`` hook, validated."""
    try:
        terms = escrow_settings.PAYMENT_TERMS(task)
    except InvalidTerms as exc:
        # A price from the host's data Stripe cannot charge: the customer is
        # told (409), nothing is written, and the host is told to validate
        # prices where users enter them.
        logger.error("Task %s cannot be paid, its terms are invalid: %s", task.pk, exc)
        raise TermsUnavailable(
            gettext("This task's price cannot be paid as it stands: %(reason)s") % {"reason": exc},
            payer=exc.payer,
        ) from exc
    if not isinstance(terms, EscrowTerms):
        raise TypeError('ESCROW_CONNECT["PAYMENT_TERMS"] must return EscrowTerms')
    return terms
