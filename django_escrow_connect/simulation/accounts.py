"""Connected accounts, as the PaymentGateway protocol asks Stripe for them."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..embedded import COMPONENT_FEATURES
from ..exceptions import (
    InvalidRequest,
)
from ..gateway.arguments import require_capabilities as _require_capabilities
from ..gateway.arguments import require_collection as _require_collection
from ..gateway.arguments import require_id as _require_id
from ..gateway.arguments import require_service_agreement as _require_service_agreement
from ..gateway.arguments import require_session_components as _require_session_components
from ..gateway.types import (
    AccountBusinessType,
    AccountLinkCollect,
    AccountLinkResult,
    AccountLinkType,
    AccountSessionResult,
    AccountSnapshot,
    FutureRequirements,
    LoginLinkResult,
    ServiceAgreement,
    SessionComponents,
)
from .links import (
    dashboard_url,
    onboarding_url,
)
from .objects import (
    JSON,
    _account_object,
    _account_type,
    _controller_object,
    _newest_first,
    _plain,
    _random,
    new_id,
)
from .rules import (
    ACCOUNT_LINK_TTL_SECONDS,
    ACCOUNT_SESSION_COMPONENTS,
    ACCOUNT_SESSION_TTL_SECONDS,
    PACKAGE_CONTROLLER,
    check_controller,
)

if TYPE_CHECKING:
    from .store import SimulatedStripe


class SimulatedAccounts:
    """The gateway's connected-account methods: accounts, links, sessions."""

    store: SimulatedStripe

    def create_account(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: Sequence[str] = ("transfers", "card_payments"),
        service_agreement: ServiceAgreement | None = None,
        controller: Mapping[str, Any] | None = None,
    ) -> AccountSnapshot:
        """A connected account with the package's controller properties.

        ``controller`` (not part of the gateway protocol) creates an account
        with other controller properties, to exercise Stripe's rules about
        them: login links exist only for Express Dashboard accounts, and
        ``account_update`` links only when the platform collects requirements
        (``requirement_collection=application``, which also needs
        ``stripe_dashboard.type=none`` and the platform paying fees and losses).
        """
        requested = _require_capabilities(capabilities)
        _require_service_agreement(service_agreement)
        s = self.store
        wanted_controller = _plain(
            dict(controller if controller is not None else PACKAGE_CONTROLLER)
        )
        params = {
            "country": country,
            "email": email,
            "business_type": business_type,
            "metadata": dict(metadata),
            "capabilities": list(requested),
            "service_agreement": service_agreement,
        }
        if controller is not None:
            params["controller"] = wanted_controller

        def validate() -> None:
            if not isinstance(country, str) or len(country) != 2 or not country.isalpha():
                raise s.error(InvalidRequest, f"Country '{country}' is unknown.", param="country")
            if business_type not in (None, "individual", "company"):
                raise s.error(
                    InvalidRequest,
                    f"Invalid business_type: {business_type!r}",
                    param="business_type",
                )
            agreement = service_agreement or "full"
            if agreement == "recipient" and "card_payments" in requested:
                raise s.error(
                    InvalidRequest,
                    "Accounts under the `recipient` service agreement cannot request the "
                    "`card_payments` capability. Request only `transfers`, or use the `full` "
                    "service agreement.",
                    param="tos_acceptance[service_agreement]",
                )
            check_controller(self.store, wanted_controller)

        def action() -> JSON:
            agreement = service_agreement or "full"
            account = _account_object(
                new_id("acct", 16), country.upper(), email, business_type, metadata, s.now()
            )
            account["controller"] = _controller_object(wanted_controller)
            account["type"] = _account_type(wanted_controller)
            account["capabilities"] = {name: "inactive" for name in requested}
            account["tos_acceptance"]["service_agreement"] = agreement
            s.accounts[account["id"]] = account
            s.balances[account["id"]] = {}
            return account

        response = s.execute_idempotent(
            "create_account", params, idempotency_key, action, validate=validate
        )
        return AccountSnapshot.from_dict(response)

    def retrieve_account(self, account_id: str) -> AccountSnapshot:
        _require_id(account_id, "account_id")
        s = self.store
        response = s.execute(
            "retrieve_account", {"account_id": account_id}, lambda: s.account(account_id)
        )
        return AccountSnapshot.from_dict(response)

    def list_accounts(self, *, created_gte: datetime) -> list[AccountSnapshot]:
        s = self.store
        since = int(created_gte.timestamp())

        def action() -> list[JSON]:
            found = [a for a in s.accounts.values() if a["created"] >= since]
            return _newest_first(found)

        response = s.execute("list_accounts", {"created_gte": since}, action)
        return [AccountSnapshot.from_dict(a) for a in response]

    def create_account_link(
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
        params: JSON = {
            "account_id": account_id,
            "link_type": link_type,
            "refresh_url": refresh_url,
            "return_url": return_url,
        }
        # Logged like the Stripe gateway sends them: only when not Stripe's defaults.
        if collect != "currently_due":
            params["collect"] = collect
        if future_requirements != "omit":
            params["future_requirements"] = future_requirements

        def action() -> JSON:
            account = s.account(account_id)
            platform_collects = account["controller"].get("requirement_collection") == "application"
            if link_type not in ("account_onboarding", "account_update"):
                raise s.error(
                    InvalidRequest,
                    f"Invalid type: must be one of account_onboarding or account_update "
                    f"(got {link_type!r}).",
                    param="type",
                )
            if link_type == "account_update" and not platform_collects:
                raise s.error(
                    InvalidRequest,
                    f"Account links of type {link_type!r} are not available for accounts "
                    "whose requirements Stripe collects (controller[requirement_collection]"
                    "=stripe): use account_onboarding, or a login link to the Express "
                    "Dashboard.",
                    param="type",
                )
            for name, url in (("refresh_url", refresh_url), ("return_url", return_url)):
                if not isinstance(url, str) or not url.strip():
                    raise s.error(InvalidRequest, "Not a valid URL", param=name)
            now = s.now()
            s.account_links[account_id] = {
                "type": link_type,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "collect": collect,
                "future_requirements": future_requirements,
                "created": now,
                "expires_at": now + ACCOUNT_LINK_TTL_SECONDS,
            }
            return {
                "object": "account_link",
                "created": now,
                "expires_at": now + ACCOUNT_LINK_TTL_SECONDS,
                "url": onboarding_url(account_id),
            }

        return AccountLinkResult.from_dict(s.execute("create_account_link", params, action))

    def create_login_link(self, *, account_id: str) -> LoginLinkResult:
        _require_id(account_id, "account_id")
        s = self.store

        def action() -> JSON:
            account = s.account(account_id)
            dashboard = account["controller"].get("stripe_dashboard", {}).get("type")
            if dashboard != "express":
                raise s.error(
                    InvalidRequest,
                    f"Login links can only be created for accounts that use the Express "
                    f"Dashboard; {account_id} has controller[stripe_dashboard][type]="
                    f"{dashboard}.",
                    param="account",
                )
            if not account["details_submitted"]:
                raise s.error(
                    InvalidRequest,
                    "Cannot create a login link for an account that has not completed onboarding.",
                    param="account",
                )
            return {"object": "login_link", "created": s.now(), "url": dashboard_url(account_id)}

        response = s.execute("create_login_link", {"account_id": account_id}, action)
        return LoginLinkResult.from_dict(response)

    def create_account_session(
        self,
        *,
        account_id: str,
        components: Sequence[str] | SessionComponents = ("account_onboarding",),
    ) -> AccountSessionResult:
        wanted = _require_session_components(components)
        _require_id(account_id, "account_id")
        s = self.store

        def action() -> JSON:
            unknown = sorted(set(wanted) - ACCOUNT_SESSION_COMPONENTS)
            if unknown:
                param = f"components[{unknown[0]}]"
                raise s.error(InvalidRequest, f"Received unknown parameter: {param}", param=param)
            account = s.account(account_id)
            for name, features in wanted.items():
                _check_features(s, account, name, features)
            now = s.now()
            secret = f"accs_secret__{_random(40)}"
            # Only a digest is kept, for the stand-in Connect.js to find the
            # session by: the client secret is a short-lived bearer credential.
            s.account_sessions[session_digest(secret)] = {
                "account": account_id,
                "components": copy.deepcopy(wanted),
                "expires_at": now + ACCOUNT_SESSION_TTL_SECONDS,
            }
            return {
                "object": "account_session",
                "account": account_id,
                "client_secret": secret,
                "components": {
                    name: {"enabled": True, "features": dict(features)}
                    for name, features in wanted.items()
                },
                "expires_at": now + ACCOUNT_SESSION_TTL_SECONDS,
                "livemode": False,
            }

        # The request log keeps the names as before; features only when sent.
        params: JSON = {"account_id": account_id, "components": list(wanted)}
        features = {name: f for name, f in wanted.items() if f}
        if features:
            params["features"] = copy.deepcopy(features)
        return AccountSessionResult.from_dict(s.execute("create_account_session", params, action))

    def account_session(self, client_secret: str) -> JSON | None:
        """The live session ``client_secret`` opens (account, components), or None."""
        if not isinstance(client_secret, str) or not client_secret:
            return None
        with self.store.lock:
            session = self.store.account_sessions.get(session_digest(client_secret))
            if session is None or session["expires_at"] <= self.store.now():
                return None
            return copy.deepcopy(session)

    def latest_account_link(self, account_id: str) -> JSON | None:
        """The last account link's ``return_url``, ``refresh_url``, ``expires_at``..., or None."""
        with self.store.lock:
            link = self.store.account_links.get(account_id)
            return copy.deepcopy(link) if link is not None else None


def session_digest(client_secret: str) -> str:
    """What the store keys an account session by, instead of its secret."""
    return hashlib.sha256(client_secret.encode()).hexdigest()


def _check_features(
    s: SimulatedStripe, account: JSON, component: str, features: Mapping[str, bool]
) -> None:
    """Stripe's rules for a component's features (unknown names; what only
    accounts whose requirements the platform collects may turn off)."""
    known = COMPONENT_FEATURES.get(component)
    if known is not None:
        for feature in features:
            if feature not in known:
                param = f"components[{component}][features][{feature}]"
                raise s.error(InvalidRequest, f"Received unknown parameter: {param}", param=param)
    platform_collects = account["controller"].get("requirement_collection") == "application"
    if platform_collects:
        return
    if features.get("disable_stripe_user_authentication") is True:
        param = f"components[{component}][features][disable_stripe_user_authentication]"
        raise s.error(
            InvalidRequest,
            "disable_stripe_user_authentication can only be true for accounts where "
            "controller.requirement_collection is application.",
            param=param,
        )
    if features.get("external_account_collection") is False:
        param = f"components[{component}][features][external_account_collection]"
        raise s.error(
            InvalidRequest,
            "external_account_collection can only be false for accounts where the platform "
            "collects requirements (controller.requirement_collection is application).",
            param=param,
        )
