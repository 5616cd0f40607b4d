"""Connected-account use cases: create once per owner, onboard, stay in sync.

One Stripe account per owner (a user XOR an organization), created on first
need and reused for ever after. Creation is crash-safe: the local row, with an
idempotency key derived from the *owner* (not the row), is committed before
Stripe is called, and the Stripe call runs with that row locked, so

- two simultaneous requests create one row and call Stripe once (the second
  waits for the lock and finds the account made);
- a rerun after a timeout or a 5xx reuses the same key, and Stripe answers
  with the account it may already have created.

Stripe's data reaches the row through :func:`apply_account_snapshot` (from
``account.updated`` webhooks, or :func:`refresh_account`), which never lets an
older snapshot overwrite newer data, then moves the account's state with the
``apply_stripe_status`` transition and notifies on commit. On PostgreSQL a
new ``account.updated`` that would be applied is written in the statement
that records the event (:func:`account_snapshot_shortcut`), with the same
outcome.

Link and session secrets (``AccountLink.url``, ``LoginLink.url``,
``AccountSession.client_secret``) are returned to the caller and never stored
or logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction
from django.db.models import signals
from django.utils import timezone
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from .. import embedded, permissions, swappable, transitions
from ..base.models import AbstractConnectedAccount
from ..conf import ACCOUNTS_V2, escrow_settings, live_mode_configured
from ..exceptions import GatewayError, GatewayPermissionDenied
from ..gateway.types import (
    AccountLinkResult,
    AccountLinkType,
    AccountSessionResult,
    AccountSnapshot,
    LoginLinkResult,
)
from ..notifications import notify
from ..states import AccountsApi, AccountStatus, BusinessType
from . import conditional, errors
from .account_configuration import AccountConfiguration, account_configuration
from .common import (
    KEY_PREFIX,
    account_model,
    accounts_v2_gateway,
    gateway,
    idempotency_key,
    key_prefix,
    read_first,
    translate,
)
from .shortcut import Shortcut

logger = logging.getLogger("django_escrow_connect.accounts")

#: Stripe keeps an idempotency key for at least 24 hours; within this window
#: a retry's key is sure to replay the first attempt's answer.
KEY_REPLAY_WINDOW = timedelta(hours=23)
#: Margin between our clock and Stripe's when searching by creation time.
CLOCK_SKEW = timedelta(minutes=10)

__all__ = [
    "ACCESS_REFUSED",
    "AccountConfiguration",
    "access_refused",
    "account_configuration",
    "apply_account_snapshot",
    "apply_capability",
    "apply_fetched_account",
    "create_account_session",
    "create_dashboard_link",
    "create_onboarding_link",
    "deauthorize_account",
    "embedded_session_components",
    "ensure_account",
    "fetch_account",
    "get_account",
    "owner_reference",
    "reauthorize_account",
    "refresh_account",
    "resolve_owner",
]

#: Capability statuses that mean "was usable, is not any more".
_CAPABILITY_ACTIVE = "active"


def _log(account: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    logger.log(
        level,
        message,
        *args,
        extra={
            "connected_account": account.stripe_account_id,
            "account_pk": str(account.pk),
            "account_status": account.status,
        },
    )


# --------------------------------------------------------------------------
# Owners
# --------------------------------------------------------------------------


def _check_one_owner(owner_user: Any, owner_organization: Any) -> None:
    if (owner_user is None) == (owner_organization is None):
        raise ValueError("Give exactly one of owner_user and owner_organization.")


def owner_reference(*, owner_user: Any = None, owner_organization: Any = None) -> str:
    """``"user:<pk>"`` or ``"organization:<pk>"``: the owner, as keys and metadata name it."""
    _check_one_owner(owner_user, owner_organization)
    if owner_user is not None:
        return f"user:{owner_user.pk}"
    return f"organization:{owner_organization.pk}"


def _owner_lookup(owner_user: Any, owner_organization: Any) -> dict[str, Any]:
    _check_one_owner(owner_user, owner_organization)
    if owner_user is not None:
        return {"owner_user": owner_user}
    return {"owner_organization": owner_organization}


def resolve_owner(user: Any, organization_id: Any = None) -> tuple[Any, Any]:
    """Whose account ``user`` is asking about: ``(owner_user, owner_organization)``.

    Without ``organization_id`` it is the user's own. With one, it is that
    organization's, and only for an admin of it (the host's
    ``ORGANIZATION_ADMIN_PREDICATE``). An unknown or malformed id and an
    organization the user does not administer both raise the *same*
    :class:`~.errors.NotFound`: whether an organization exists is not told to
    someone who may not manage it. Primary keys may be integers or UUIDs; the
    model's own primary-key field parses the id.
    """
    if not permissions.is_authenticated(user):
        raise errors.Forbidden(_("Sign in to manage a connected account."))
    if organization_id is None or organization_id == "":
        return user, None
    Organization = swappable.load("Organization")
    not_found = errors.NotFound(_("No such organization."), code="organization_not_found")
    try:
        pk = Organization._meta.pk.to_python(organization_id)
        organization = Organization._default_manager.get(pk=pk)
    except (
        Organization.DoesNotExist,
        ValidationError,
        ValueError,
        TypeError,
        OverflowError,
    ) as exc:
        raise not_found from exc
    if not permissions.is_organization_admin(user, organization):
        raise not_found
    return None, organization


def get_account(*, owner_user: Any = None, owner_organization: Any = None) -> Any:
    """The owner's account row, or None (it may not be created at Stripe yet)."""
    lookup = _owner_lookup(owner_user, owner_organization)
    return account_model()._default_manager.filter(**lookup).first()


# --------------------------------------------------------------------------
# Creation
# --------------------------------------------------------------------------


def _owner(account: Any) -> Any:
    return account.owner_user if account.owner_user_id is not None else account.owner_organization


def _metadata(account: Any) -> dict[str, str]:
    if account.owner_user_id is not None:
        metadata = {"escrow_owner": f"user:{account.owner_user_id}"}
    else:
        metadata = {"escrow_owner": f"organization:{account.owner_organization_id}"}
    if key_prefix() != KEY_PREFIX:
        # Installations sharing a Stripe account tell their accounts apart.
        metadata["escrow_namespace"] = key_prefix()
    return metadata


def ensure_account(
    *, owner_user: Any = None, owner_organization: Any = None, business_type: str
) -> Any:
    """The owner's connected account, created at Stripe on first need.

    Never creates a second account: an owner has one row (a one-to-one key
    enforces it) and that row one Stripe account. ``business_type`` is fixed
    when the account is first made; asking again with another type raises
    :class:`~.errors.Conflict` (``business_type_mismatch``) instead of silently
    ignoring it.

    Call it outside ``transaction.atomic()`` (the API views are non-atomic):
    the local row is then committed before Stripe is called. Inside an outer
    transaction it is still correct, because the key derives from the owner.
    """
    if business_type not in BusinessType.values:
        raise errors.InvalidInput(
            _("business_type must be one of %(choices)s.")
            % {"choices": ", ".join(BusinessType.values)},
            code="invalid_business_type",
        )
    account = _get_or_create_row(owner_user, owner_organization, business_type)
    if account.business_type != business_type:
        raise errors.Conflict(
            _(
                "This connected account was opened as %(business_type)r; "
                "its business type cannot be changed here."
            )
            % {"business_type": account.business_type},
            code="business_type_mismatch",
        )
    if account.is_created:
        return account
    return _create_at_stripe(account.pk)


def _get_or_create_row(owner_user: Any, owner_organization: Any, business_type: str) -> Any:
    Account = account_model()
    lookup = _owner_lookup(owner_user, owner_organization)
    account = Account._default_manager.filter(**lookup).first()
    if account is not None:
        return account
    # Checked before the row exists: a hook Stripe would refuse leaves nothing behind.
    configuration = account_configuration(
        owner_user if owner_user is not None else owner_organization
    )
    key = idempotency_key(
        "account-owner",
        owner_reference(owner_user=owner_user, owner_organization=owner_organization),
        "create",
        0,
    )
    defaults = {
        "creation_idempotency_key": key,
        # Fixed now: the account is created, read and linked through this API
        # even if ACCOUNTS_API changes later.
        "accounts_api": (
            AccountsApi.V2 if escrow_settings.ACCOUNTS_API == ACCOUNTS_V2 else AccountsApi.V1
        ),
        "business_type": business_type,
        "country": configuration.country,
        "email": configuration.email,
        # Stripe's Account object has no livemode: the key creating it decides.
        "livemode": live_mode_configured(),
    }
    try:
        # get_or_create retries the read when a concurrent insert won the race.
        with transaction.atomic():
            account, _created = Account._default_manager.get_or_create(**lookup, defaults=defaults)
    except IntegrityError:
        account = Account._default_manager.filter(**lookup).first()
        if account is None:
            raise
    return account


def _create_at_stripe(account_pk: Any) -> Any:
    Account = account_model()
    failure: GatewayError | None = None
    with transaction.atomic():
        # The lock serialises concurrent first requests: the loser waits here
        # and then finds the Stripe id the winner stored.
        account = Account._default_manager.select_for_update().get(pk=account_pk)
        if account.is_created:
            return account
        lost = _find_lost_account(account)
        if lost is not None:
            _adopt(account, lost)
            return account
        # Capabilities and agreement are not stored: they follow the strategy
        # and the hook, which must not change while an account is being created.
        configuration = account_configuration(_owner(account))
        try:
            if _is_v2(account):
                snapshot = accounts_v2_gateway().create_account_v2(
                    idempotency_key=account.creation_idempotency_key,
                    **creation_request_v2(account, configuration),
                )
            else:
                snapshot = gateway().create_account(
                    idempotency_key=account.creation_idempotency_key,
                    **creation_request(account, configuration),
                )
        except GatewayError as exc:
            logger.warning(
                "connected account creation failed",
                extra={
                    "account_pk": str(account.pk),
                    "code": exc.code,
                    "request_id": exc.request_id,
                    "transient": exc.is_transient,
                },
            )
            failure = exc
        else:
            _adopt(account, snapshot)
            _log(account, "connected account created")
            return account
    if _answer_is_stored(failure, v2=_is_v2(account)):
        _next_creation_key(account)
    raise translate(failure, _("create the connected account")) from failure


def _answer_is_stored(exc: GatewayError, *, v2: bool = False) -> bool:
    """Whether Stripe answered and keeps that answer under the key.

    v1: Stripe stores the answer of every request that started executing, a
    refusal or a 500 alike, and replays it for the same key for 24 hours:
    retrying with that key could only get the same error (and, once the
    host's configuration changed, an idempotency error). No answer (a
    timeout), a rate limit or a concurrent request with the key store nothing:
    the key is kept, so a retry finds what Stripe may have done.

    v2 (``v2``): Stripe documents that a retry with the key does not repeat
    what succeeded and *finishes* failed or partially failed work, so after a
    5xx the key is kept (a retry completes the one account instead of risking
    a second). A refusal (4xx) is final for those parameters: a new key lets
    a corrected configuration through.
    """
    if exc.http_status is None or exc.http_status in (409, 429):
        return False
    if v2:
        return exc.http_status < 500
    return True


def _next_creation_key(account: Any) -> None:
    """Give the row a new creation key, after Stripe answered with an error.

    The next attempt looks for an account made under an earlier key before
    creating one (:func:`_find_lost_account`): a 500 does not say whether
    Stripe made it.
    """
    current = account.creation_idempotency_key
    stem, _, attempt = current.rpartition(":")
    following = f"{stem}:{int(attempt) + 1}" if attempt.isdigit() and stem else f"{current}:1"
    # Only if nobody rotated it meanwhile (two requests failing at once).
    account_model()._default_manager.filter(pk=account.pk, creation_idempotency_key=current).update(
        creation_idempotency_key=following
    )


def _key_was_rotated(account: Any) -> bool:
    _, _, attempt = account.creation_idempotency_key.rpartition(":")
    return bool(attempt != "0")


def creation_request(account: Any, configuration: AccountConfiguration) -> dict[str, Any]:
    """The ``create_account`` arguments for a row (its key is the row's own).

    Country, email and business type are stored on the row at first need: a
    retry sends exactly the same parameters, as Stripe requires for a reused key.
    """
    return {
        "country": account.country,
        "email": account.email or None,
        "business_type": account.business_type,
        "metadata": _metadata(account),
        "capabilities": configuration.capabilities,
        "service_agreement": configuration.service_agreement,
    }


def _is_v2(account: Any) -> bool:
    return bool(account.accounts_api == AccountsApi.V2)


def creation_request_v2(account: Any, configuration: AccountConfiguration) -> dict[str, Any]:
    """The ``create_account_v2`` arguments for a row (same rule as :func:`creation_request`).

    No service agreement: in Accounts v2 the configurations say it (a
    ``recipient``-only account is a recipient; ``card_payments`` adds the
    ``merchant`` configuration, the full agreement).
    """
    return {
        "country": account.country,
        "email": account.email or None,
        "business_type": account.business_type,
        "metadata": _metadata(account),
        "capabilities": configuration.capabilities,
    }


def _adopt(account: Any, snapshot: AccountSnapshot) -> None:
    account.stripe_account_id = snapshot.id
    _copy_snapshot(account, snapshot)
    # synced_at stays empty: every event Stripe sends about the new account
    # is newer than this answer, whatever our clock says.
    _settle_status(account)
    account.save()


def _find_lost_account(account: Any) -> AccountSnapshot | None:
    """The Stripe account an earlier attempt made, once its key may be gone.

    Within :data:`KEY_REPLAY_WINDOW` of the row's creation the creation key
    still replays Stripe's answer, so nothing is looked up. After that Stripe
    may have pruned the key, and a retry with it would open a *second*
    account if the first attempt's answer was lost: the platform's accounts
    created since the row are searched for this owner's metadata first. The
    same search runs once the key was replaced after an error answer
    (:func:`_next_creation_key`).
    """
    if timezone.now() - account.created_at < KEY_REPLAY_WINDOW and not _key_was_rotated(account):
        return None
    wanted = _metadata(account)
    since = account.created_at - CLOCK_SKEW
    try:
        if _is_v2(account):
            # Accounts v2 lists without a creation or metadata filter: every
            # open recipient account is read and filtered here.
            candidates = sorted(
                (
                    snapshot
                    for snapshot in accounts_v2_gateway().list_accounts_v2()
                    if snapshot.created is None or snapshot.created >= since
                ),
                key=lambda snapshot: snapshot.created or since,
                reverse=True,
            )
        else:
            candidates = gateway().list_accounts(created_gte=since)
    except GatewayError as exc:
        # Creating blindly could duplicate the account: refuse until Stripe answers.
        raise translate(exc, _("look for the connected account")) from exc
    mine = [
        snapshot
        for snapshot in candidates
        if snapshot.metadata.get("escrow_owner") == wanted["escrow_owner"]
        # No namespace is the default prefix's: another installation's account never matches.
        and snapshot.metadata.get("escrow_namespace", KEY_PREFIX) == key_prefix()
    ]
    if not mine:
        return None
    # Newest first: the oldest is the one the first attempt made.
    found = mine[-1]
    if _is_v2(account):
        # The list answers without configurations or requirements: read it whole.
        try:
            found = accounts_v2_gateway().retrieve_account_v2(found.id)
        except GatewayError as exc:
            raise translate(exc, _("look for the connected account")) from exc
    logger.warning(
        "connected account found at Stripe for a row without its id; adopted",
        extra={
            "account_pk": str(account.pk),
            "stripe_account_id": found.id,
            "others": [snapshot.id for snapshot in mine[:-1]],
        },
    )
    result: AccountSnapshot | None = found
    return result


# --------------------------------------------------------------------------
# Keeping the row in step with Stripe
# --------------------------------------------------------------------------


def _snapshot_values(snapshot: AccountSnapshot) -> dict[str, Any]:
    """The row's fields a snapshot sets (by attname): :func:`_copy_snapshot`'s and
    :func:`account_snapshot_shortcut`'s one list. Country and email only when
    Stripe said them (an answer without them keeps the row's)."""
    values: dict[str, Any] = {
        "charges_enabled": snapshot.charges_enabled,
        "payouts_enabled": snapshot.payouts_enabled,
        "details_submitted": snapshot.details_submitted,
        "requirements_currently_due": list(snapshot.currently_due),
        "requirements_eventually_due": list(snapshot.eventually_due),
        "requirements_past_due": list(snapshot.past_due),
        "disabled_reason": (snapshot.disabled_reason or "")[:255],
        "capabilities": dict(snapshot.capabilities),
    }
    if snapshot.country:
        values["country"] = snapshot.country.upper()[:2]
    if snapshot.email:
        values["email"] = snapshot.email
    return values


def _copy_snapshot(account: Any, snapshot: AccountSnapshot) -> None:
    for name, value in _snapshot_values(snapshot).items():
        setattr(account, name, value)


def _settle_status(account: Any) -> None:
    """Apply the state the synced fields imply (deauthorization is sticky)."""
    if can_proceed(account.apply_stripe_status):
        account.apply_stripe_status()


_WATCHED = (
    "status",
    "charges_enabled",
    "payouts_enabled",
    "details_submitted",
    "requirements_currently_due",
    "requirements_eventually_due",
    "requirements_past_due",
    "disabled_reason",
    "capabilities",
)


def _watched(account: Any) -> dict[str, Any]:
    return {
        name: (sorted(value) if isinstance(value, list) else value)
        for name, value in ((name, getattr(account, name)) for name in _WATCHED)
    }


def _due(account: Any) -> set[str]:
    return set(account.requirements_currently_due) | set(account.requirements_past_due)


# Ordering Stripe's data. An event carries Stripe's time (``created``, whole
# seconds, Stripe's clock); a fetch has none, so it is stamped with the
# package's own clock. The row's ``synced_at`` says what stamped it, by its
# microseconds (no other column is needed):
#
# - 0: an ``account.updated``, the whole account as of that second;
# - 1 (_PARTIAL): an event about one part of the account (``capability.updated``,
#   ``account.application.authorized``) as of that second; the rest of the row
#   is older, by how much is not known;
# - any other: a fetch (_fetch_stamp never gives 0 or 1).
#
# Like is compared with like. An event of a later second than the row's event
# is newer; one of an earlier second is older than a whole snapshot (stale) but
# cannot be ordered against the rest of a row whose latest event was a partial
# one; two events of the same second cannot be ordered at all (Stripe emits
# several per second during onboarding). An event within FETCH_DOUBT of a fetch
# (the same second, give or take the two clocks' skew) cannot be ordered
# against it either. What cannot be ordered is read from Stripe once instead.

#: An event this close to a fetch (either side) may be older or newer than it.
FETCH_DOUBT = timedelta(seconds=2)

#: ``synced_at``'s microseconds after an event about one part of the account.
_PARTIAL = 1

_APPLY = "apply"
_STALE = "stale"
_DOUBT = "doubt"


def _fetch_stamp() -> datetime:
    """Now, on the package's clock, never with an event's microseconds (0 or 1)."""
    return _stamp(timezone.now(), fetched=True)


def _is_fetch_stamp(value: datetime) -> bool:
    return value.microsecond > _PARTIAL


def _is_partial_stamp(value: datetime) -> bool:
    return value.microsecond == _PARTIAL


def _stamp(as_of: datetime, *, fetched: bool, partial: bool = False) -> datetime:
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be a timezone-aware datetime")
    if fetched:
        return as_of if _is_fetch_stamp(as_of) else as_of.replace(microsecond=_PARTIAL + 1)
    # Stripe's event times are whole seconds.
    return as_of.replace(microsecond=_PARTIAL if partial else 0)


def _order(account: Any, as_of: datetime, *, fetched: bool = False) -> str:
    """Whether data stamped ``as_of`` is newer than the row's (apply), older (stale), or
    cannot be ordered against it (doubt: see the rules above)."""
    stamp = _stamp(as_of, fetched=fetched)
    synced = account.synced_at
    if synced is None:
        return _APPLY
    if fetched or _is_fetch_stamp(synced):
        if _is_fetch_stamp(synced) != fetched and abs(stamp - synced) < FETCH_DOUBT:
            return _DOUBT
        return _STALE if stamp < synced else _APPLY
    held = synced.replace(microsecond=0)
    if stamp > held:
        return _APPLY
    if stamp == held or _is_partial_stamp(synced):
        return _DOUBT
    return _STALE


def _applies_sql(synced: str) -> str:
    """:func:`_order` of an ``account.updated`` (not a fetch) as SQL: true when it says apply.

    ``synced`` is the quoted ``synced_at`` column; the two parameters are the
    event's stamp minus :data:`FETCH_DOUBT`, then the stamp. Apply when the row
    was never synced, or was synced at least FETCH_DOUBT before the event (not
    stale, not in doubt whichever kind stamped it), or by an event (a whole
    second, or one microsecond past it: :data:`_PARTIAL`) of an earlier second.
    Not in the same second: that is the handler's (a read from Stripe). The
    seconds field's microseconds are the same in every session time zone.
    """
    return (
        f"({synced} IS NULL OR {synced} <= %s OR ({synced} < %s "
        f"AND mod(EXTRACT(MICROSECONDS FROM {synced})::bigint, 1000000) <= {_PARTIAL}))"
    )


def _lock_by_stripe_id(account_id: str) -> Any:
    if not account_id:
        return None
    return (
        account_model()
        ._default_manager.select_for_update()
        .filter(stripe_account_id=account_id)
        .first()
    )


def _notify_changes(
    account: Any,
    *,
    before: dict[str, Any],
    previous_status: str,
    previous_due: set[str],
    previous_capabilities: dict[str, str],
) -> None:
    if _watched(account) == before:
        return
    notify("account_updated", account=account, previous_status=previous_status)
    if _due(account) - previous_due:
        notify(
            "account_requirements_due",
            account=account,
            currently_due=list(account.requirements_currently_due),
            past_due=list(account.requirements_past_due),
        )
    for name, status in sorted(account.capabilities.items()):
        if previous_capabilities.get(name) == _CAPABILITY_ACTIVE and status != _CAPABILITY_ACTIVE:
            notify("capability_restricted", account=account, capability=name, status=status)


def _column_values(account: Any) -> dict[str, Any]:
    """The row's column values (containers copied: a change may mutate them)."""
    values = {}
    for field in account._meta.concrete_fields:
        if field.primary_key:
            continue
        value = getattr(account, field.attname)
        values[field.attname] = value.copy() if isinstance(value, (list, dict)) else value
    return values


def _apply(
    account: Any, as_of: datetime, change: Any, *, fetched: bool = False, partial: bool = False
) -> Any:
    """Run ``change(account)`` on a locked row unless ``as_of`` is stale; save; notify.

    A fetch (``fetched``) is applied when in doubt: it *is* the re-read.
    ``partial``: ``change`` sets one part of the account (see :data:`_PARTIAL`).
    """
    if _order(account, as_of, fetched=fetched) == _STALE:
        _log(account, "stale account data ignored (as of %s)", as_of.isoformat())
        return account
    before = _Before.of(account)
    columns = _column_values(account)
    change(account)
    account.synced_at = _stamp(as_of, fetched=fetched, partial=partial)
    _settle_status(account)
    # Only what changed: an account row is wide (requirements, capabilities).
    changed = [name for name, value in _column_values(account).items() if columns[name] != value]
    account.save(update_fields=[*changed, "updated_at"])
    _announce(account, before)
    return account


@dataclass(frozen=True)
class _Before:
    """What :func:`_announce` compares a changed account with."""

    watched: dict[str, Any]
    status: str
    due: set[str]
    capabilities: dict[str, str]

    @classmethod
    def of(cls, account: Any) -> _Before:
        return cls(_watched(account), account.status, _due(account), dict(account.capabilities))


def _announce(account: Any, before: _Before) -> None:
    """Notify (on commit) and log what an applied change did to ``account``."""
    _notify_changes(
        account,
        before=before.watched,
        previous_status=before.status,
        previous_due=before.due,
        previous_capabilities=before.capabilities,
    )
    if account.status != before.status:
        _log(account, "connected account %s -> %s", before.status, account.status)


def apply_account_snapshot(
    snapshot: AccountSnapshot,
    *,
    as_of: datetime,
    fetched: bool = False,
    reads: dict[str, Any] | None = None,
) -> Any:
    """Store what Stripe says about an account, as of ``as_of``.

    ``as_of`` is when Stripe produced the data: an event's ``created``, or,
    with ``fetched=True``, the package's clock when it read the account.
    Data older than what the row holds (``synced_at``) is ignored, so events
    delivered out of order never roll the row back. Event times are compared
    with event times and fetch times with fetch times. An event that cannot be
    ordered against the row's data (the same second as the row's event, older
    than a ``capability.updated`` or ``account.application.authorized`` that
    changed only part of the row, or within :data:`FETCH_DOUBT` of a fetch) is
    not guessed at: the account is read from Stripe once instead
    (:func:`refresh_account`), unless the snapshot says what the row holds.
    Never with the row locked: called without ``reads``, the read follows
    this function's own transaction (call it with none open); the webhook
    pipeline passes ``reads`` (see :func:`_read_again`).
    Returns the account, or None when no row has this Stripe id (the webhook
    pipeline defers such events).

    Notifies on commit: ``account_updated`` (when anything changed, with
    ``previous_status``), ``account_requirements_due`` (when requirements that
    were not due before are now currently or past due) and
    ``capability_restricted`` (per capability that left ``active``).
    """
    # No savepoint: the webhook pipeline's transaction is the unit (a failure
    # rolls all of it back), and a savepoint costs two round trips.
    with transaction.atomic(savepoint=False):
        account = _lock_by_stripe_id(snapshot.id)
        if account is None:
            return None
        if (
            fetched
            or _order(account, as_of) != _DOUBT
            or _newer_but_for_one_part(account, as_of, snapshot)
        ):
            return _apply(
                account, as_of, lambda acc: _copy_snapshot(acc, snapshot), fetched=fetched
            )
        if _holds(account, _snapshot_values(snapshot)):
            # Older or newer, it changes nothing: no need to ask Stripe.
            return account
        if reads is not None:
            return _read_again(account, as_of, reads)
    return _reread(account, as_of)


def _holds(account: Any, values: dict[str, Any]) -> bool:
    return all(getattr(account, name) == value for name, value in values.items())


def _newer_but_for_one_part(account: Any, as_of: datetime, snapshot: AccountSnapshot) -> bool:
    """Whether a snapshot of the second of the row's one-part event can be applied.

    A one-part event is applied only when it is newer than everything the row
    holds (:func:`_order` says apply), so a snapshot of its very second is
    newer than the row but for that part: a capability (an authorization
    changes none of the snapshot's fields). When the snapshot's capabilities
    are the row's, it cannot undo it. Otherwise which is newer is not known.
    """
    synced: datetime | None = account.synced_at
    return (
        synced is not None
        and _is_partial_stamp(synced)
        and _stamp(as_of, fetched=False) == synced.replace(microsecond=0)
        and dict(snapshot.capabilities) == account.capabilities
    )


def _reread(account: Any, as_of: datetime) -> Any:
    """An event that cannot be ordered against the row's data: ask Stripe once.

    After the caller's transaction: no lock is held while Stripe answers.
    """
    _log_reread(account, as_of)
    return refresh_account(account)


def _log_reread(account: Any, as_of: datetime) -> None:
    _log(
        account,
        "account event as of %s cannot be ordered against the stored data; "
        "reading the account again",
        as_of.isoformat(),
    )


def _read_again(account: Any, as_of: datetime, reads: dict[str, Any]) -> Any:
    """:func:`_reread` in the webhook pipeline, ``account`` locked in its transaction.

    The read is the pipeline's, with no transaction open
    (:func:`refresh_account` with ``reads``); the handler then runs again
    and, if the event still cannot be ordered against the row (it is checked
    again under the lock: the row may have moved while Stripe answered), the
    answer is applied here like any read: the latest read wins.
    """
    if _read_key(account) not in reads:
        _log_reread(account, as_of)
    return refresh_account(account, reads=reads)


def account_snapshot_shortcut(
    snapshot: AccountSnapshot, *, as_of: datetime, condition: str
) -> Shortcut | None:
    """An ``account.updated`` event's :func:`apply_account_snapshot` as ``WITH`` items.

    For the webhook pipeline, which joins them to the event's insert
    (:mod:`..webhooks.shortcuts`); ``condition`` is ANDed to the lock's
    ``WHERE``. ``account_locked`` locks the row (``FOR UPDATE``: under a
    concurrent change it waits, re-checks its ``WHERE`` on the newest row
    version and returns that version) where the locked read would apply the
    snapshot and move the state: the row exists, :func:`_order` says apply
    (:func:`_applies_sql`) and ``apply_stripe_status`` leaves its state.
    ``account_set`` writes the snapshot, ``synced_at`` and the state
    ``derived_status()`` gives for the snapshot's fields (computed here, on an
    unsaved copy). A concurrent delivery of the same event that committed
    first left the row synced in the event's second: the lock's ``WHERE`` no
    longer matches, and nothing is written.
    After the commit the same notifications and log line as :func:`_apply`.

    None (the locked read then runs, as always) where that would not be the
    same as ``save()``: not PostgreSQL, receivers of the account's
    ``pre_save``/``post_save`` or of django-fsm's transition signals, a
    transition or status rule the host overrides.
    """
    Account = account_model()
    connection = connections[router.db_for_write(Account)]
    if connection.vendor != "postgresql" or not snapshot.id or timezone.is_naive(as_of):
        return None
    if signals.pre_save.has_listeners(Account) or signals.post_save.has_listeners(Account):
        return None  # the write must be save()'s
    if not conditional.usable(Account, AbstractConnectedAccount, ["apply_stripe_status"]):
        return None
    if any(
        getattr(Account, name) is not getattr(AbstractConnectedAccount, name)
        for name in _STATUS_RULES
    ):
        return None  # derived_status() might read more than the snapshot's fields
    values = _snapshot_values(snapshot)
    synced = Account()
    _copy_snapshot(synced, snapshot)
    stamp = _stamp(as_of, fetched=False)
    assignments = {
        **values,
        "synced_at": stamp,
        "status": synced.derived_status(),
        "updated_at": timezone.now(),
    }
    sources = sorted(transitions.sources(Account, "apply_stripe_status"))
    sql = _shortcut_sql(Account, connection.alias, tuple(assignments), len(sources), condition)
    opts = Account._meta

    def prep(name: str, value: Any) -> Any:
        return opts.get_field(name).get_db_prep_save(value, connection)

    synced_at = opts.get_field("synced_at")
    params = [
        snapshot.id,
        *sources,
        synced_at.get_db_prep_value(stamp - FETCH_DOUBT, connection),
        synced_at.get_db_prep_value(stamp, connection),
        *(prep(name, value) for name, value in assignments.items()),
    ]
    width = len(opts.concrete_fields)

    def finish(row: tuple[Any, ...]) -> None:
        before = conditional.from_row(Account, connection, tuple(row[:width]))
        after = conditional.from_row(Account, connection, tuple(row[width:]))
        _announce(after, _Before.of(before))
        # The pipeline's log line names the event's account, as the handler's does.

    return Shortcut(
        ctes=sql.ctes,
        params=params,
        applied="EXISTS (SELECT 1 FROM account_set)",
        joins="LEFT JOIN account_locked ON TRUE LEFT JOIN account_set ON TRUE",
        columns=sql.columns,
        finish=finish,
    )


#: What derived_status() is made of: a host that overrides one keeps the locked read.
_STATUS_RULES = ("derived_status", "_status_from_stripe_data")


@dataclass(frozen=True)
class _ShortcutSql:
    ctes: str
    columns: list[str]


@functools.lru_cache(maxsize=64)
def _shortcut_sql(
    model: Any,
    alias: str,
    assigned: tuple[str, ...],
    sources: int,
    condition: str,
) -> _ShortcutSql:
    """:func:`account_snapshot_shortcut`'s SQL, built once per shape (which fields are set)."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    opts = model._meta

    def column(name: str) -> str:
        return str(quote(opts.get_field(name).column))

    table = quote(opts.db_table)
    pk = quote(opts.pk.column)
    every = conditional.changed_columns(model, connection)
    synced = column("synced_at")
    # Identifiers are quoted model metadata, values are parameters.
    locked = (
        f"account_locked AS (SELECT {', '.join(every)} FROM {table} "  # noqa: S608
        f"WHERE {condition} AND {column('stripe_account_id')} = %s "
        f"AND {column('status')} IN ({', '.join(['%s'] * sources)}) "
        f"AND {_applies_sql(synced)} FOR UPDATE)"
    )
    sets = ", ".join(f"{column(name)} = %s" for name in assigned)
    changed = (
        f"account_set AS (UPDATE {table} SET {sets} FROM account_locked "  # noqa: S608
        f"WHERE {table}.{pk} = account_locked.{pk} "
        f"RETURNING {', '.join(f'{table}.{c}' for c in every)})"
    )
    columns = [f"account_locked.{c}" for c in every] + [f"account_set.{c}" for c in every]
    return _ShortcutSql(f"{locked}, {changed}", columns)


def apply_capability(
    account_id: str,
    capability_name: str,
    status: str,
    as_of: datetime,
    *,
    reads: dict[str, Any] | None = None,
) -> Any:
    """``capability.updated``: one capability's new status (None for unknown accounts).

    The row's ``synced_at`` moves to ``as_of``, marked as one part of the
    account (:data:`_PARTIAL`): an older ``account.updated`` arriving later is
    not applied blindly (it could turn an inactive ``transfers`` capability
    back on) nor dropped (its other fields may be newer than the row's): it
    makes the package read the account from Stripe. An event that cannot be
    ordered against the row's data (same second, older than another partial
    event, as old as a fetch) reads the account too, unless the row already
    holds this status; never with the row locked (``reads``: as
    :func:`apply_account_snapshot`).
    """
    name, value = str(capability_name), str(status)

    def change(account: Any) -> None:
        capabilities = dict(account.capabilities)
        capabilities[name] = value
        account.capabilities = capabilities

    with transaction.atomic():
        account = _lock_by_stripe_id(account_id)
        if account is None:
            return None
        order = _order(account, as_of)
        if order != _DOUBT:
            return _apply(account, as_of, change, partial=True)
        if account.capabilities.get(name) == value:
            return account  # older or newer, it changes nothing
        if reads is not None:
            return _read_again(account, as_of, reads)
    return _reread(account, as_of)


def deauthorize_account(account_id: str, *, as_of: datetime | None = None) -> Any:
    """``account.application.deauthorized``: the owner disconnected the platform.

    No payment goes to the account any more. Idempotent: a repeated event
    changes nothing and notifies nothing. With ``as_of``, an event older than
    the row's newest data (e.g. a re-authorization) is ignored, and
    ``deauthorized_at`` is the event's time: :func:`reauthorize_account`
    ignores an authorization older than it. A deauthorization newer than the
    stored one (the owner reconnected and disconnected again) only moves
    ``deauthorized_at`` forward, without a notification.
    Returns the account, or None for an unknown account id.
    """
    with transaction.atomic():
        account = _lock_by_stripe_id(account_id)
        if account is None:
            return None
        if account.is_deauthorized:
            if as_of is not None:
                _record_later_deauthorization(account, as_of)
            return account
        # In doubt (the same second as the row's data, as old as a fetch) the
        # deauthorization wins: a fetch cannot see it, and paying a
        # disconnected account is the worse mistake.
        if as_of is not None and _superseded(account, as_of):
            _log(account, "stale deauthorization ignored (as of %s)", as_of.isoformat())
            return account
        previous_status = account.status
        account.deauthorize()
        if as_of is not None:
            account.deauthorized_at = _stamp(as_of, fetched=False)
        account.save()
        _log(account, "connected account deauthorized (was %s)", previous_status)
        notify("account_deauthorized", account=account)
    return account


def _record_later_deauthorization(account: Any, as_of: datetime) -> None:
    """Keep the time of a newer deauthorization of an already deauthorized account.

    Receivers already know it is deauthorized: nothing is announced. The row
    moves all the same, so that an authorization older than this event is
    ignored (:func:`reauthorize_account`) and staff's *Mark connected again*,
    decided before it, is refused (:func:`_reconnect`).
    """
    stamp = _stamp(as_of, fetched=False)
    since: datetime | None = account.deauthorized_at
    if since is not None and stamp <= since:
        return  # a repeated (or older) event: nothing new
    account.deauthorized_at = stamp
    account.save(update_fields=["deauthorized_at", "updated_at"])
    _log(account, "deauthorized again (as of %s)", as_of.isoformat())


def _superseded(account: Any, as_of: datetime) -> bool:
    """Whether the row holds data Stripe produced after the event of ``as_of``.

    Stripe sends nothing about an account that disconnected the platform, so
    any later event shows it connected again: a deauthorization older than
    that is over. Whole snapshots and partial events alike.
    """
    synced: datetime | None = account.synced_at
    if synced is not None and not _is_fetch_stamp(synced):
        return _stamp(as_of, fetched=False) < synced.replace(microsecond=0)
    return _order(account, as_of) == _STALE


def reauthorize_account(account_id: str, *, as_of: datetime | None = None) -> Any:
    """``account.application.authorized``: the platform is connected (again).

    A deauthorized account returns to the state its synced data implies
    (``account_updated`` with ``previous_status="deauthorized"``), unless the
    event is not newer than the deauthorization (``deauthorized_at``): an
    older authorization delivered late is ignored. With ``as_of``, the row's
    ``synced_at`` moves forward (marked as one part of the account,
    :data:`_PARTIAL`, as :func:`apply_capability` does) so that a
    deauthorization event older than this one, delivered late, is ignored,
    and an older ``account.updated`` makes the package read the account.
    Returns the account, or None for an unknown account id.
    """
    with transaction.atomic():
        account = _lock_by_stripe_id(account_id)
        if account is None:
            return None
        if as_of is not None and account.is_deauthorized:
            since = account.deauthorized_at
            # The same second: the deauthorization wins, as in deauthorize_account.
            if since is not None and _stamp(as_of, fetched=False) <= since:
                _log(account, "stale authorization ignored (as of %s)", as_of.isoformat())
                return account
        previous_status = account.status
        update_fields = ["updated_at"]
        if as_of is not None and _order(account, as_of) == _APPLY:
            account.synced_at = _stamp(as_of, fetched=False, partial=True)
            update_fields.append("synced_at")
        elif not account.is_deauthorized:
            return account  # nothing to record: the row holds data as new as this
        if account.is_deauthorized:
            account.reauthorize()
            update_fields += ["status", "deauthorized_at"]
        account.save(update_fields=update_fields)
        if account.status != previous_status:
            _log(account, "connected account reauthorized")
            notify("account_updated", account=account, previous_status=previous_status)
    return account


def fetch_account(account: Any) -> tuple[datetime, AccountSnapshot]:
    """Read the account from Stripe through the API that created it.

    Returns the fetch's stamp (the package's clock, taken *before* the
    request, so a later fetch always orders after an earlier one) and the
    snapshot. Raises the gateway's error untranslated.
    """
    stamp = _fetch_stamp()
    if _is_v2(account):
        return stamp, accounts_v2_gateway().retrieve_account_v2(account.stripe_account_id)
    return stamp, gateway().retrieve_account(account.stripe_account_id)


def apply_fetched_account(snapshot: AccountSnapshot, *, fetched_at: datetime) -> Any:
    """Apply an account read from Stripe at ``fetched_at`` (see :func:`fetch_account`).

    The latest read wins (a read stamped before the row's last one is
    ignored). A closed Accounts v2 account (``closed``) takes no transfers
    any more: it is deauthorized, as an account that disconnected the
    platform (``account_deauthorized``). The read and the deauthorization are
    one change of the locked row: both are stored, or neither, and receivers
    hear ``account_updated`` (when the read changed anything) then
    ``account_deauthorized`` on its commit, never an updated account that
    is still connected. Returns the account, or None for an unknown Stripe id.
    """
    # A savepoint when nested (the webhook pipeline): a failure of either part
    # undoes both, their on-commit notifications too; next to a Stripe read
    # its round trips cost nothing. A fetched snapshot never reads Stripe again
    # in here: no request runs inside this transaction.
    with transaction.atomic():
        updated = apply_account_snapshot(snapshot, as_of=fetched_at, fetched=True)
        if updated is not None and snapshot.closed and not updated.is_deauthorized:
            _log(updated, "connected account closed at Stripe")
            updated = deauthorize_account(snapshot.id)
    return updated


def refresh_account(
    account: Any,
    *,
    reads: dict[str, Any] | None = None,
    deauthorize_if_refused: bool = False,
    reauthorize_if_read: bool = False,
) -> Any:
    """Read the account from Stripe now and apply it (stamped with the package's clock).

    A deauthorized account cannot be read by the platform any more; it is
    returned as stored. So is an account not created at Stripe yet.

    ``reads``: in the webhook pipeline's transaction, Stripe is not asked
    here. The first call raises :class:`~.errors.ReadFirst` and the pipeline
    reads the account with no transaction open; the handler's next run
    applies the answer (see :func:`~.common.read_first`).

    Staff's answers to a lost ``account.application.*`` event (the admin's
    *Refresh from Stripe*, never the API): with ``deauthorize_if_refused``, a
    read Stripe refuses with ``403 account_invalid`` deauthorizes the account
    as ``account.application.deauthorized`` would; with
    ``reauthorize_if_read``, a deauthorized account is read too, and one that
    Stripe answers (not ``closed``) is reauthorized and the read applied.
    Neither is automatic: Stripe answers ``account_invalid`` as well for a key
    of another platform or mode, and may still answer reads of an account
    that disconnected, so a person who knows which it is decides.
    """
    if not account.is_created or (account.is_deauthorized and not reauthorize_if_read):
        return account
    if reads is None:
        try:
            stamp, snapshot = fetch_account(account)
        except GatewayError as exc:
            if deauthorize_if_refused and not account.is_deauthorized and access_refused(exc):
                return _lost_access(account, exc)
            raise translate(exc, _("read the connected account")) from exc
        if account.is_deauthorized:
            return _reconnect(account, stamp, snapshot)
    else:
        read = functools.partial(_fetch_or_explain, account)
        stamp, snapshot = read_first(reads, _read_key(account), read)
    updated = apply_fetched_account(snapshot, fetched_at=stamp)
    return updated if updated is not None else account


def _reconnect(account: Any, stamp: datetime, snapshot: AccountSnapshot) -> Any:
    """Staff confirmed: Stripe reads the deauthorized ``account``, so connect it again.

    The read and the reconnection are one change of the locked row, so the
    status the reauthorization derives is the read's, and receivers hear of
    it once (``account_updated`` with ``previous_status="deauthorized"``),
    not once for the read and once more for the status. A ``closed``
    Accounts v2 account stays deauthorized (the read is stored).

    Staff decided on ``account`` as it was before the read: when the locked
    row was deauthorized again since (``deauthorized_at`` moved: a
    deauthorization event committed while Stripe answered), the owner
    disconnected after the read, and the reconnection is refused
    (:class:`~.errors.Conflict`) with nothing written.
    """
    if snapshot.closed:
        return apply_fetched_account(snapshot, fetched_at=stamp) or account
    with transaction.atomic():
        locked = _lock_by_stripe_id(account.stripe_account_id)
        if locked is None:
            return account
        if not locked.is_deauthorized:
            # Connected again meanwhile: the read is a plain one.
            return apply_fetched_account(snapshot, fetched_at=stamp) or locked
        if locked.deauthorized_at != account.deauthorized_at:
            _log(locked, "deauthorized again while Stripe was read: not reconnected")
            raise errors.Conflict(
                _(
                    "The account was disconnected again while Stripe was being read: it stays "
                    "deauthorized. Check with its owner before marking it connected again."
                ),
                code="account_deauthorized",
            )
        if _order(locked, stamp, fetched=True) != _STALE:
            reconnected = _apply(
                locked, stamp, functools.partial(_reconnected, snapshot), fetched=True
            )
        else:
            # A newer read is stored: this one is ignored, the reauthorization
            # is the one change (one notification either way).
            reconnected = reauthorize_account(locked.stripe_account_id) or locked
        # Logged with the change it describes: never for a refused reconnection.
        _log(reconnected, "Stripe reads the deauthorized account: reauthorized by staff")
        return reconnected


def _reconnected(snapshot: AccountSnapshot, account: Any) -> None:
    """:func:`_reconnect`'s change: the read's data, then the status they imply."""
    _copy_snapshot(account, snapshot)
    account.reauthorize()


#: Stripe's code when the key has no access to a connected account (403):
#: "does not have access to account ... (or that account does not exist).
#: Application access may have been revoked."
ACCESS_REFUSED = "account_invalid"


def access_refused(exc: GatewayError) -> bool:
    """Whether Stripe refused the platform access to a connected account."""
    return isinstance(exc, GatewayPermissionDenied) and exc.code == ACCESS_REFUSED


def _lost_access(account: Any, exc: GatewayError) -> Any:
    """Staff confirmed: Stripe refuses the platform access, so deauthorize as the event would."""
    _log(
        account,
        "Stripe refuses the platform access to the account (%s): deauthorized by staff",
        exc.code,
        level=logging.WARNING,
    )
    return deauthorize_account(account.stripe_account_id) or account


def _read_key(account: Any) -> str:
    """Under which key the webhook pipeline keeps a read of ``account`` (``reads``)."""
    return f"account:{account.stripe_account_id}"


def _fetch_or_explain(account: Any) -> tuple[datetime, AccountSnapshot]:
    """:func:`fetch_account`, a gateway error translated for the caller to show."""
    try:
        return fetch_account(account)
    except GatewayError as exc:
        raise translate(exc, _("read the connected account")) from exc


# --------------------------------------------------------------------------
# Links and sessions (bearer secrets: returned, never stored or logged)
# --------------------------------------------------------------------------


def _require_usable(account: Any) -> None:
    if account is None or not account.is_created:
        raise errors.NotFound(_("There is no connected account yet."), code="no_account")
    if account.status == AccountStatus.DEAUTHORIZED:
        raise errors.Conflict(
            _("This connected account has been disconnected from the platform."),
            code="account_deauthorized",
        )


def onboarding_link_type(account: Any) -> AccountLinkType:
    """Always ``account_onboarding`` for the accounts this package creates.

    They have the Express dashboard (``controller.stripe_dashboard.type =
    express``), and Stripe refuses ``account_update`` links for any account with
    access to a Stripe-hosted dashboard. ``account_onboarding`` also collects
    whatever becomes due after the first onboarding; editing submitted details
    happens in the Express dashboard (:func:`create_dashboard_link`).
    """
    return "account_onboarding"


def create_onboarding_link(account: Any, *, refresh_url: str, return_url: str) -> AccountLinkResult:
    """A new single-use Stripe-hosted onboarding link (it expires within minutes)."""
    _require_usable(account)
    try:
        if _is_v2(account):
            link = accounts_v2_gateway().create_account_link_v2(
                account_id=account.stripe_account_id,
                link_type=onboarding_link_type(account),
                refresh_url=refresh_url,
                return_url=return_url,
                collect=escrow_settings.ONBOARDING_COLLECT,
                future_requirements=escrow_settings.ONBOARDING_FUTURE_REQUIREMENTS,
            )
        else:
            link = gateway().create_account_link(
                account_id=account.stripe_account_id,
                link_type=onboarding_link_type(account),
                refresh_url=refresh_url,
                return_url=return_url,
                collect=escrow_settings.ONBOARDING_COLLECT,
                future_requirements=escrow_settings.ONBOARDING_FUTURE_REQUIREMENTS,
            )
    except GatewayError as exc:
        raise translate(exc, _("create an onboarding link")) from exc
    _log(account, "onboarding link created")
    return link


def create_dashboard_link(account: Any) -> LoginLinkResult:
    """A single-use Express dashboard login link; only once onboarding was submitted.

    When the row says onboarding is not submitted, Stripe is asked first (the
    owner may just have finished, before the webhook arrived).
    """
    _require_usable(account)
    if not account.details_submitted:
        account = refresh_account(account)
        _require_usable(account)  # the read may find it closed (Accounts v2): deauthorized
    if not account.details_submitted:
        raise errors.Conflict(
            _("Finish onboarding before opening the Stripe dashboard."),
            code="onboarding_incomplete",
        )
    try:
        link = gateway().create_login_link(account_id=account.stripe_account_id)
    except GatewayError as exc:
        raise translate(exc, _("open the Stripe dashboard")) from exc
    _log(account, "dashboard link created")
    return link


def embedded_session_components(
    components: Sequence[str] | None = None,
) -> dict[str, dict[str, bool]]:
    """``{component: features}`` for a session enabling ``components``.

    None means every component in ``EMBEDDED_COMPONENTS``. A name this
    package does not know is refused with ``unknown_component``; one the host
    did not enable, or a payments/disputes component while the escrow
    strategy keeps charges on the platform, with ``component_not_enabled``
    (both 400).
    """
    names = embedded.enabled_components() if components is None else tuple(components)
    if not names:
        raise errors.InvalidInput(
            _("Name at least one embedded component."), code="unknown_component"
        )
    enabled = set(embedded.enabled_components())
    for name in names:
        if name not in embedded.COMPONENT_FEATURES:
            raise errors.InvalidInput(
                _("%(component)s is not an embedded component this platform offers.")
                % {"component": name},
                code="unknown_component",
            )
        if name not in enabled:
            raise errors.InvalidInput(
                _("The embedded component %(component)s is not enabled on this platform.")
                % {"component": name},
                code="component_not_enabled",
            )
        if name in embedded.CHARGE_COMPONENTS and not embedded.charge_components_allowed():
            raise errors.InvalidInput(
                _(
                    "The embedded component %(component)s shows a connected account's own "
                    "charges; with this platform's payments they are the platform's."
                )
                % {"component": name},
                code="component_not_enabled",
            )
    return embedded.session_components(tuple(dict.fromkeys(names)))


def create_account_session(
    account: Any, *, components: Sequence[str] | None = None
) -> AccountSessionResult:
    """An embedded-components session; hand ``client_secret`` to Connect.js only.

    ``components`` are checked by :func:`embedded_session_components` (None:
    every component in ``EMBEDDED_COMPONENTS``) and sent with their features.
    """
    wanted = embedded_session_components(components)
    _require_usable(account)
    try:
        session = gateway().create_account_session(
            account_id=account.stripe_account_id, components=wanted
        )
    except GatewayError as exc:
        raise translate(exc, _("start an embedded onboarding session")) from exc
    _log(account, "account session created (%s)", ", ".join(wanted))
    return session
