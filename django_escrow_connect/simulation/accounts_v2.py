"""Accounts v2 (``/v2/core/accounts``) and thin events, as the simulated Stripe answers them.

Stripe documents that a v2 account *is* a connected account to every v1 API
("you can pass the ID of a v2 Account to an Accounts v1 API endpoint; the
response is structured as a v1 Account"). The simulation keeps that promise
the simple way: a v2 account lives in the store's ``accounts`` as a v1
account (transfers, payouts and the other parties' actions work on it
unchanged), and :attr:`SimulatedStripe.v2_accounts` keeps what only v2 has
(configurations, dashboard, responsibilities, ``closed``). The v2 answers are
rendered from both.

Changes to a v2 account are announced the v2 way: thin events
(``v2.core.account[requirements].updated``,
``v2.core.account[configuration.recipient].capability_status_updated``,
``v2.core.account.closed``) to the thin endpoint, instead of ``account.updated``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidRequest
from ..gateway.arguments import require_capabilities as _require_capabilities
from ..gateway.arguments import require_collection as _require_collection
from ..gateway.arguments import require_id as _require_id
from ..gateway.arguments import require_idempotency_key as _require_idempotency_key
from ..gateway.types import (
    AccountBusinessType,
    AccountLinkCollect,
    AccountLinkResult,
    AccountLinkType,
    AccountSnapshot,
    FutureRequirements,
)
from .links import onboarding_url
from .objects import JSON, _account_object, _newest_first, iso_time, new_id
from .rules import ACCOUNT_LINK_TTL_SECONDS

if TYPE_CHECKING:
    from .store import SimulatedStripe

__all__ = ["SimulatedAccountsV2", "render_v2_account"]

#: The v1 capability statuses and what the v2 configurations say instead.
_V2_STATUS = {"active": "active", "pending": "pending", "inactive": "restricted"}


def _capability(status: str | None) -> JSON:
    v2 = _V2_STATUS.get(status or "", "restricted")
    details = (
        [] if v2 == "active" else [{"code": "requirements_past_due", "resolution": "provide_info"}]
    )
    if v2 == "pending":
        details = [{"code": "requirements_pending_verification", "resolution": "no_resolution"}]
    return {"status": v2, "status_details": details}


def render_v2_account(account: JSON, extra: Mapping[str, Any]) -> JSON:
    """The ``v2.core.account`` of a stored account, every ``include`` answered."""
    requirements = account["requirements"]
    past_due = set(requirements.get("past_due") or ())
    entries = []
    for name in requirements.get("eventually_due") or ():
        if name in past_due:
            deadline = "past_due"
        elif name in (requirements.get("currently_due") or ()):
            deadline = "currently_due"
        else:
            deadline = "eventually_due"
        entries.append(
            {
                "awaiting_action_from": "user",
                "description": name,
                "errors": [],
                "impact": {"restricts_capabilities": []},
                "minimum_deadline": {"status": deadline},
                "reference": None,
                "requested_reasons": [{"code": "routine_onboarding"}],
            }
        )
    capabilities = account["capabilities"]
    tos = account.get("tos_acceptance") or {}
    closed = bool(extra.get("closed"))
    transfers = _capability(capabilities.get("transfers"))
    payouts = _capability("active" if account["payouts_enabled"] else "inactive")
    if closed:
        transfers = payouts = {"status": "restricted", "status_details": []}
    configuration: JSON = {
        "customer": None,
        "merchant": None,
        "recipient": {
            "applied": True,
            "capabilities": {"stripe_balance": {"payouts": payouts, "stripe_transfers": transfers}},
        },
    }
    applied = ["recipient"]
    if "card_payments" in capabilities:
        applied.insert(0, "merchant")
        configuration["merchant"] = {
            "applied": True,
            "capabilities": {"card_payments": _capability(capabilities.get("card_payments"))},
        }
    return {
        "id": account["id"],
        "object": "v2.core.account",
        "applied_configurations": applied,
        "closed": closed,
        "configuration": configuration,
        "contact_email": account["email"],
        "created": iso_time(account["created"]),
        "dashboard": extra.get("dashboard", "express"),
        "defaults": {
            "currency": account["default_currency"],
            "locales": ["en-US"],
            "responsibilities": copy.deepcopy(extra.get("responsibilities") or {}),
        },
        "display_name": None,
        "future_requirements": None,
        "identity": {
            "attestations": {
                "terms_of_service": {
                    "account": (
                        {
                            "date": iso_time(tos["date"]),
                            "ip": tos.get("ip"),
                            "user_agent": tos.get("user_agent"),
                        }
                        if tos.get("date")
                        else None
                    )
                }
            },
            "country": account["country"],
            "entity_type": account["business_type"],
        },
        "livemode": False,
        "metadata": dict(account["metadata"]),
        "requirements": {
            "entries": entries,
            "summary": {
                "minimum_deadline": (
                    {"status": entries[0]["minimum_deadline"]["status"], "time": None}
                    if entries
                    else None
                )
            },
        },
    }


class SimulatedAccountsV2:
    """The gateway's Accounts v2 methods, and thin events."""

    store: SimulatedStripe

    def _v2(self, account_id: str) -> tuple[JSON, JSON]:
        s = self.store
        extra = s.v2_accounts.get(account_id)
        account = s.accounts.get(account_id)
        if extra is None or account is None:
            raise s.missing("account", account_id, "id")
        return account, extra

    def create_account_v2(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: Sequence[str] = ("transfers",),
    ) -> AccountSnapshot:
        """A v2 account with the recipient (and, for ``*_payments``, merchant) configuration."""
        _require_idempotency_key(idempotency_key)
        requested = _require_capabilities(capabilities)
        for name in requested:
            if name != "transfers" and not name.endswith("_payments"):
                # As BaseGateway: refused before the request.
                raise ValueError(
                    f"Capability {name!r} has no Accounts v2 equivalent the package knows: "
                    "use 'transfers' and '*_payments' capabilities."
                )
        s = self.store
        params = {
            "identity": {"country": country, "entity_type": business_type},
            "contact_email": email,
            "metadata": dict(metadata),
            "capabilities": list(requested),
        }

        def validate() -> None:
            if not isinstance(country, str) or len(country) != 2 or not country.isalpha():
                raise s.error(
                    InvalidRequest, f"Country '{country}' is unknown.", param="identity.country"
                )
            if business_type not in (None, "individual", "company"):
                raise s.error(
                    InvalidRequest,
                    f"Invalid entity_type: {business_type!r}",
                    param="identity.entity_type",
                )

        def action() -> JSON:
            now = s.now()
            account = _account_object(
                new_id("acct", 16), country.upper(), email, business_type, metadata, now
            )
            account["capabilities"] = {name: "inactive" for name in requested}
            agreement = "full" if "card_payments" in requested else "recipient"
            account["tos_acceptance"]["service_agreement"] = agreement
            s.accounts[account["id"]] = account
            s.balances[account["id"]] = {}
            extra = {
                "dashboard": "express",
                "responsibilities": {
                    "fees_collector": "application",
                    "losses_collector": "application",
                },
                "closed": False,
            }
            s.v2_accounts[account["id"]] = extra
            s.emit_thin("v2.core.account.created", account["id"])
            return render_v2_account(account, extra)

        response = s.execute_idempotent(
            "create_account_v2", params, idempotency_key, action, validate=validate, v2=True
        )
        return AccountSnapshot.from_v2_dict(response)

    def retrieve_account_v2(self, account_id: str) -> AccountSnapshot:
        _require_id(account_id, "account_id")
        s = self.store

        def action() -> JSON:
            account, extra = self._v2(account_id)
            return render_v2_account(account, extra)

        response = s.execute("retrieve_account_v2", {"account_id": account_id}, action)
        return AccountSnapshot.from_v2_dict(response)

    def list_accounts_v2(self) -> list[AccountSnapshot]:
        s = self.store

        def action() -> list[JSON]:
            found = [
                s.accounts[account_id]
                for account_id, extra in s.v2_accounts.items()
                if not extra.get("closed") and account_id in s.accounts
            ]
            # The list answers top-level fields only (no include on a list).
            return [
                {
                    "id": a["id"],
                    "object": "v2.core.account",
                    "applied_configurations": ["recipient"],
                    "closed": False,
                    "created": iso_time(a["created"]),
                    "metadata": dict(a["metadata"]),
                    "livemode": False,
                }
                for a in _newest_first(found)
            ]

        response = s.execute("list_accounts_v2", {}, action)
        return [AccountSnapshot.from_v2_dict(a) for a in response]

    def create_account_link_v2(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
        collect: AccountLinkCollect = "currently_due",
        future_requirements: FutureRequirements = "omit",
    ) -> AccountLinkResult:
        _require_id(account_id, "account_id")
        _require_collection(collect, future_requirements)
        s = self.store
        use_case: JSON = {"refresh_url": refresh_url, "return_url": return_url}
        # Sent (and logged) like the Stripe gateway: only when not Stripe's defaults.
        collection: JSON = {}
        if collect != "currently_due":
            collection["fields"] = collect
        if future_requirements != "omit":
            collection["future_requirements"] = future_requirements
        if collection:
            use_case["collection_options"] = collection
        params = {
            "account": account_id,
            "use_case": {"type": link_type, link_type: use_case},
        }

        def action() -> JSON:
            self._v2(account_id)
            if link_type not in ("account_onboarding", "account_update"):
                raise s.error(
                    InvalidRequest, f"Invalid use_case.type: {link_type!r}", param="use_case.type"
                )
            for name, url in (("refresh_url", refresh_url), ("return_url", return_url)):
                if not isinstance(url, str) or not url.strip():
                    raise s.error(
                        InvalidRequest, "Not a valid URL", param=f"use_case.{link_type}.{name}"
                    )
            now = s.now()
            s.account_links[account_id] = {
                "type": link_type,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "created": now,
                "expires_at": now + ACCOUNT_LINK_TTL_SECONDS,
            }
            return {
                "object": "v2.core.account_link",
                "account": account_id,
                "created": iso_time(now),
                "expires_at": iso_time(now + ACCOUNT_LINK_TTL_SECONDS),
                "livemode": False,
                "url": onboarding_url(account_id),
                "use_case": copy.deepcopy(params["use_case"]),
            }

        response = s.execute("create_account_link_v2", params, action)
        return AccountLinkResult.from_v2_dict(response)

    def list_thin_events(
        self,
        *,
        created_gte: datetime,
        types: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Thin events created at or after ``created_gte``, newest first."""
        if isinstance(types, str):
            raise TypeError("types must be a sequence of event types, not a string")
        s = self.store
        wanted = set(types) if types else None
        since = iso_time(int(created_gte.timestamp()))

        def action() -> list[JSON]:
            found = [
                event
                for event in s.thin_events.values()
                if event["created"] >= since and (wanted is None or event["type"] in wanted)
            ]
            return found[::-1]

        params = {"created_gte": since, "types": sorted(wanted) if wanted else None}
        return iter(s.execute("list_thin_events", params, action))

    def close_account_v2(self, account_id: str) -> AccountSnapshot:
        """The account was closed (by the platform or Stripe): ``v2.core.account.closed``.

        Not a gateway method: the package never closes accounts.
        """
        s = self.store

        def action() -> JSON:
            account, extra = self._v2(account_id)
            extra["closed"] = True
            account["capabilities"] = {name: "inactive" for name in account["capabilities"]}
            account["payouts_enabled"] = False
            s.emit_thin("v2.core.account.closed", account_id)
            return render_v2_account(account, extra)

        response = s.execute(
            "close_account_v2",
            {"account_id": account_id},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return AccountSnapshot.from_v2_dict(response)
