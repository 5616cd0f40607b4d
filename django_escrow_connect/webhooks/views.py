"""The HTTP endpoints Stripe posts events to (platform, Connect, thin events).

Both are thin: they bound and read the raw body, then hand it to
:func:`~.receiver.receive`, which verifies, records and processes. Like
django-anymail's base webhook view, :meth:`StripeWebhookView.run_validators`
calls ``validate_request`` of every class in the hierarchy, so an endpoint
subclass can add a check but never skip the base one.

The views are ``csrf_exempt`` (Stripe has no CSRF token; the signature is the
authentication) and ``transaction.non_atomic_requests``: with
``ATOMIC_REQUESTS = True`` the event row must survive a handler failure, and
the pipeline manages its own transactions.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from ..conf import escrow_settings
from ..states import WebhookEndpoint
from .receiver import Outcome, WebhookRejected, receive

SIGNATURE_HEADER = "HTTP_STRIPE_SIGNATURE"


class StripeWebhookView(View):
    """Base view: POST only, bounded raw body, every validator runs."""

    endpoint: str = ""
    http_method_names = ["post"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        return transaction.non_atomic_requests(csrf_exempt(view))

    def run_validators(self, request: HttpRequest) -> None:
        for klass in reversed(type(self).__mro__):
            validator = klass.__dict__.get("validate_request")
            if validator is not None:
                validator(self, request)

    def validate_request(self, request: HttpRequest) -> None:
        """Refuse a declared body over the limit before reading anything."""
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared:
            try:
                length = int(declared)
            except ValueError:
                raise WebhookRejected("Invalid Content-Length.") from None
            if length > escrow_settings.WEBHOOK_MAX_BODY_BYTES:
                raise WebhookRejected(
                    f"Body larger than {escrow_settings.WEBHOOK_MAX_BODY_BYTES} bytes.",
                    status_code=413,
                )

    def read_body(self, request: HttpRequest) -> bytes:
        """At most the limit plus one byte, whatever Content-Length claimed."""
        limit = escrow_settings.WEBHOOK_MAX_BODY_BYTES
        body = request.read(limit + 1)
        if len(body) > limit:
            raise WebhookRejected(f"Body larger than {limit} bytes.", status_code=413)
        return body

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            self.run_validators(request)
            body = self.read_body(request)
        except WebhookRejected as exc:
            return respond(Outcome(exc.status_code, "rejected", exc.reason))
        return respond(receive(self.endpoint, body, request.META.get(SIGNATURE_HEADER)))


class PlatformWebhookView(StripeWebhookView):
    """``POST stripe/webhook/``: events of the platform account."""

    endpoint = WebhookEndpoint.PLATFORM


class ConnectWebhookView(StripeWebhookView):
    """``POST stripe/webhook/connect/``: events of connected accounts."""

    endpoint = WebhookEndpoint.CONNECT


class ThinWebhookView(StripeWebhookView):
    """``POST stripe/webhook/thin/``: thin (v2) events from an event destination."""

    endpoint = WebhookEndpoint.THIN


def respond(outcome: Outcome) -> JsonResponse:
    if outcome.ok:
        body: dict[str, Any] = {"received": True, "status": outcome.status}
        if outcome.event_id:
            body["event"] = outcome.event_id
        return JsonResponse(body, status=outcome.status_code)
    code = "invalid_webhook" if outcome.status == "rejected" else "processing_failed"
    return JsonResponse(
        {"error": {"code": code, "message": outcome.reason}}, status=outcome.status_code
    )
