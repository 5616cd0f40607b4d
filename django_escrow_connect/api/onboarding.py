"""Connect onboarding API: create the doer's connected account, send them to
Stripe's onboarding, report the account's status, open the Express dashboard,
and start an embedded-onboarding session.

Every endpoint acts on the signed-in user's own account, or with
``organization_id`` on an organization's account, for that organization's
admins only (:func:`~django_escrow_connect.services.accounts.resolve_owner`).
Answers that carry a bearer secret (links, client secrets) are sent with
``Cache-Control: no-store``.

Two plain Django views complete the browser flow: ``stripe/onboarding/refresh/``
mints a new link and redirects to it (Stripe's rule for the ``refresh_url``),
and ``stripe/onboarding/return/`` re-reads the account and shows its status.
They are used when ``ONBOARDING_REFRESH_URL`` / ``ONBOARDING_RETURN_URL`` are
empty.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views import View
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from ..conf import escrow_settings
from ..embedded import COMPONENT_FEATURES
from ..services import accounts as account_services
from ..services import errors
from ..states import AccountStatus, BusinessType
from .errors import EscrowAPIView
from .schema import OpenApiParameter, extend_schema, view_schema
from .serializers import StrictSerializer, error_responses, validated

_R = TypeVar("_R", bound=HttpResponse)

NO_STORE = "no-store"

# --------------------------------------------------------------------------
# Serializers
# --------------------------------------------------------------------------


def _organization_id_field() -> serializers.CharField:
    return serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=True,
        help_text=(
            "Act on this organization's account (you must administer it). "
            "Omit for your own account."
        ),
    )


class OwnerQuerySerializer(StrictSerializer):
    organization_id = _organization_id_field()

    def to_internal_value(self, data: Any) -> Any:
        # Query strings may carry unrelated parameters (analytics, cache busting).
        return serializers.Serializer.to_internal_value(self, data)


class AccountStatusQuerySerializer(OwnerQuerySerializer):
    refresh = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Re-read the account from Stripe before answering.",
    )


class OnboardingLinkRequestSerializer(StrictSerializer):
    account_type = serializers.ChoiceField(
        choices=BusinessType.choices,
        help_text="Business type of a new account; must match an existing one.",
    )
    organization_id = _organization_id_field()


class OnboardingLinkSerializer(serializers.Serializer[Any]):
    url = serializers.URLField(help_text="Single-use Stripe onboarding URL; redirect to it now.")
    expires_at = serializers.DateTimeField()


class RequirementsSerializer(serializers.Serializer[Any]):
    currently_due = serializers.ListField(
        child=serializers.CharField(), source="requirements_currently_due"
    )
    eventually_due = serializers.ListField(
        child=serializers.CharField(), source="requirements_eventually_due"
    )
    past_due = serializers.ListField(child=serializers.CharField(), source="requirements_past_due")


class CapabilitiesSerializer(serializers.Serializer[Any]):
    transfers = serializers.CharField(
        source="capabilities.transfers",
        allow_null=True,
        help_text="Stripe's status of the capability (active, inactive, pending), or null.",
    )
    card_payments = serializers.CharField(source="capabilities.card_payments", allow_null=True)


class AccountStatusSerializer(serializers.Serializer[Any]):
    account_id = serializers.CharField(source="stripe_account_id")
    status = serializers.ChoiceField(choices=AccountStatus.choices)
    is_verified = serializers.BooleanField()
    can_transfer = serializers.BooleanField(
        help_text="Stripe accepts transfers to this account (the transfers capability is active)."
    )
    charges_enabled = serializers.BooleanField()
    payouts_enabled = serializers.BooleanField()
    details_submitted = serializers.BooleanField()
    disabled_reason = serializers.CharField(allow_null=True)
    requirements = RequirementsSerializer(source="*")
    capabilities = CapabilitiesSerializer(source="*")

    def to_representation(self, instance: Any) -> Any:
        data = super().to_representation(instance)
        data["disabled_reason"] = data["disabled_reason"] or None
        return data


class DashboardLinkSerializer(serializers.Serializer[Any]):
    url = serializers.URLField(help_text="Single-use Express dashboard URL; redirect to it now.")


class AccountSessionRequestSerializer(StrictSerializer):
    organization_id = _organization_id_field()
    account_type = serializers.ChoiceField(
        choices=BusinessType.choices,
        required=False,
        help_text="Creates the account first when it does not exist yet.",
    )
    components = serializers.ListField(
        # Not a ChoiceField: a name the package does not know answers
        # unknown_component, one the host did not enable component_not_enabled.
        child=serializers.CharField(max_length=64),
        required=False,
        min_length=1,
        max_length=len(COMPONENT_FEATURES),
        help_text=(
            "Embedded components to enable (Stripe's names: account_onboarding, "
            "account_management, notification_banner, payouts, balances, documents, "
            "payments, disputes_list). Each must be in the EMBEDDED_COMPONENTS setting. "
            "Omit for all of them."
        ),
    )


class AccountSessionSerializer(serializers.Serializer[Any]):
    client_secret = serializers.CharField(
        help_text="Give it to Connect.js (fetchClientSecret); never store or log it."
    )
    expires_at = serializers.DateTimeField()


def _errors(*statuses: int) -> dict[int, Any]:
    descriptions = {
        400: "Invalid input.",
        401: "Not signed in.",
        403: "Not signed in (session authentication).",
        404: "No such organization (or not one you administer), or no account yet (no_account).",
        409: "The account's state does not allow this.",
        503: "Stripe is not reachable; retry.",
    }
    return error_responses(descriptions, *statuses)


ORGANIZATION_PARAMETER = OpenApiParameter(
    name="organization_id",
    type=str,
    location=OpenApiParameter.QUERY,
    required=False,
    description="Act on this organization's account (you must administer it).",
)

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _namespace(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return (match.namespace if match and match.namespace else "escrow_connect") + ":"


def _with_query(url: str, params: dict[str, str]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def onboarding_urls(request: HttpRequest, organization: Any = None) -> tuple[str, str]:
    """``(refresh_url, return_url)`` for an onboarding link.

    The configured ``ONBOARDING_REFRESH_URL`` / ``ONBOARDING_RETURN_URL`` when
    set, else the package's own pages. For an organization's account,
    ``organization_id`` is added to the query string of either.
    """
    params = {"organization_id": str(organization.pk)} if organization is not None else {}
    namespace = _namespace(request)
    refresh_url = escrow_settings.ONBOARDING_REFRESH_URL or request.build_absolute_uri(
        reverse(namespace + "stripe-onboarding-refresh")
    )
    return_url = escrow_settings.ONBOARDING_RETURN_URL or request.build_absolute_uri(
        reverse(namespace + "stripe-onboarding-return")
    )
    return _with_query(refresh_url, params), _with_query(return_url, params)


def _existing_account(owner_user: Any, owner_organization: Any) -> Any:
    account = account_services.get_account(
        owner_user=owner_user, owner_organization=owner_organization
    )
    if account is None or not account.is_created:
        raise errors.NotFound(_("There is no connected account yet."), code="no_account")
    return account


def _no_store(response: _R) -> _R:
    response["Cache-Control"] = NO_STORE
    return response


# --------------------------------------------------------------------------
# API views
# --------------------------------------------------------------------------


class OnboardingAPIView(EscrowAPIView):
    permission_classes = [IsAuthenticated]
    schema = view_schema()


class OnboardingLinkView(OnboardingAPIView):
    """Create the account on first need and return a fresh onboarding link."""

    @extend_schema(
        operation_id="escrow_stripe_onboarding_link_create",
        summary="Start or continue Stripe onboarding",
        description=(
            "Creates the connected account on first use (one per owner; later calls "
            "reuse it) and returns a new single-use Stripe onboarding link."
        ),
        request=OnboardingLinkRequestSerializer,
        responses={200: OnboardingLinkSerializer, **_errors(400, 403, 404, 409, 503)},
        tags=["onboarding"],
    )
    def post(self, request: Request) -> Response:
        data = validated(OnboardingLinkRequestSerializer, request.data)
        owner_user, owner_organization = account_services.resolve_owner(
            request.user, data.get("organization_id")
        )
        account = account_services.ensure_account(
            owner_user=owner_user,
            owner_organization=owner_organization,
            business_type=data["account_type"],
        )
        refresh_url, return_url = onboarding_urls(request, owner_organization)
        link = account_services.create_onboarding_link(
            account, refresh_url=refresh_url, return_url=return_url
        )
        body = OnboardingLinkSerializer({"url": link.url, "expires_at": link.expires_at}).data
        return _no_store(Response(body))


class AccountStatusView(OnboardingAPIView):
    """The account's verification state, as last synced (or re-read with refresh=1)."""

    @extend_schema(
        operation_id="escrow_stripe_account_status_retrieve",
        summary="Connected account status",
        parameters=[AccountStatusQuerySerializer],
        responses={200: AccountStatusSerializer, **_errors(400, 403, 404, 409, 503)},
        tags=["onboarding"],
    )
    def get(self, request: Request) -> Response:
        query = validated(AccountStatusQuerySerializer, request.query_params)
        owner_user, owner_organization = account_services.resolve_owner(
            request.user, query.get("organization_id")
        )
        account = _existing_account(owner_user, owner_organization)
        if query.get("refresh"):
            account = account_services.refresh_account(account)
        return Response(AccountStatusSerializer(account).data)


class DashboardLinkView(OnboardingAPIView):
    """A single-use login link to the Express dashboard (after onboarding)."""

    @extend_schema(
        operation_id="escrow_stripe_dashboard_link_retrieve",
        summary="Express dashboard login link",
        parameters=[ORGANIZATION_PARAMETER],
        responses={200: DashboardLinkSerializer, **_errors(400, 403, 404, 409, 503)},
        tags=["onboarding"],
    )
    def get(self, request: Request) -> Response:
        query = validated(OwnerQuerySerializer, request.query_params)
        owner_user, owner_organization = account_services.resolve_owner(
            request.user, query.get("organization_id")
        )
        account = _existing_account(owner_user, owner_organization)
        link = account_services.create_dashboard_link(account)
        return _no_store(Response(DashboardLinkSerializer({"url": link.url}).data))


class AccountSessionView(OnboardingAPIView):
    """An AccountSession for Connect embedded components (onboarding, payouts, ...)."""

    @extend_schema(
        operation_id="escrow_stripe_account_session_create",
        summary="Embedded components session",
        description=(
            "Returns a short-lived client_secret for Connect.js, enabling the requested "
            "embedded components (default: every component in the EMBEDDED_COMPONENTS "
            "setting) with the platform's features. A component the package does not "
            "offer answers 400 unknown_component; one the platform did not enable (or a "
            "payments/disputes component while charges are the platform's) answers 400 "
            "component_not_enabled. The account must exist, or account_type must be given "
            "to create it."
        ),
        request=AccountSessionRequestSerializer,
        responses={200: AccountSessionSerializer, **_errors(400, 403, 404, 409, 503)},
        tags=["onboarding"],
    )
    def post(self, request: Request) -> Response:
        data = validated(AccountSessionRequestSerializer, request.data)
        # Refused before an account is created for a request that cannot succeed.
        components = list(account_services.embedded_session_components(data.get("components")))
        owner_user, owner_organization = account_services.resolve_owner(
            request.user, data.get("organization_id")
        )
        if data.get("account_type"):
            account = account_services.ensure_account(
                owner_user=owner_user,
                owner_organization=owner_organization,
                business_type=data["account_type"],
            )
        else:
            account = _existing_account(owner_user, owner_organization)
        session = account_services.create_account_session(account, components=components)
        body = AccountSessionSerializer(
            {"client_secret": session.client_secret, "expires_at": session.expires_at}
        ).data
        return _no_store(Response(body))


# --------------------------------------------------------------------------
# Browser views (Stripe redirects the user here)
# --------------------------------------------------------------------------


def _error_page(request: HttpRequest, exc: errors.ServiceError) -> HttpResponse:
    return render(
        request,
        "escrow_connect/onboarding/error.html",
        {"code": exc.code, "message": exc.message},
        status=exc.status_code,
    )


@method_decorator(login_required, name="dispatch")
class OnboardingRefreshView(View):
    """Stripe sends the user here when a link expired or was used: mint a new one."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            owner_user, owner_organization = account_services.resolve_owner(
                request.user, request.GET.get("organization_id")
            )
            account = _existing_account(owner_user, owner_organization)
            refresh_url, return_url = onboarding_urls(request, owner_organization)
            link = account_services.create_onboarding_link(
                account, refresh_url=refresh_url, return_url=return_url
            )
        except errors.ServiceError as exc:
            return _error_page(request, exc)
        return _no_store(HttpResponseRedirect(link.url))


@method_decorator(login_required, name="dispatch")
class OnboardingReturnView(View):
    """Stripe sends the user here when they leave onboarding: show the fresh status."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            owner_user, owner_organization = account_services.resolve_owner(
                request.user, request.GET.get("organization_id")
            )
            account = _existing_account(owner_user, owner_organization)
        except errors.ServiceError as exc:
            return _error_page(request, exc)
        refresh_failed = False
        try:
            account = account_services.refresh_account(account)
        except errors.ServiceError:
            # Show what is stored; the Connect webhook will catch up.
            refresh_failed = True
        refresh_url, _return_url = onboarding_urls(request, owner_organization)
        return render(
            request,
            "escrow_connect/onboarding/return.html",
            {
                "account": account,
                "organization": owner_organization,
                "refresh_failed": refresh_failed,
                "continue_url": refresh_url,
                "needs_more": bool(
                    not account.details_submitted
                    or account.requirements_currently_due
                    or account.requirements_past_due
                ),
            },
        )
