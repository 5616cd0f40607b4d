"""The floor: the least a webhook receiver can do and still be a receiver.

A plain Django view that verifies the ``Stripe-Signature`` header with
stripe-python, parses the body, and stores the event with one
``INSERT ... ON CONFLICT DO NOTHING`` (a duplicate does nothing). No event log
states, no processing. The package's figures are given as a ratio to this one,
measured in the same run on the same payloads.
"""

from __future__ import annotations

import json

import stripe
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

#: The floor's secret (the benchmark signs every delivery to it with this).
FLOOR_SECRET = "whsec_bench_floor"
TABLE = "bench_floor_event"


def create_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "stripe_event_id varchar(255) PRIMARY KEY, type varchar(128) NOT NULL, "
            "payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
        )


@csrf_exempt
@require_POST
def floor_view(request: HttpRequest) -> HttpResponse:
    payload = request.body
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            request.headers.get("Stripe-Signature", ""),
            FLOOR_SECRET,
            tolerance=300,
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, ValueError):
        return HttpResponseBadRequest()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (stripe_event_id, type, payload) VALUES (%s, %s, %s) "  # noqa: S608
            "ON CONFLICT DO NOTHING",
            [event["id"], event["type"], payload.decode("utf-8")],
        )
    return HttpResponse(status=200)
