"""API error messages follow the request's language; the codes never change."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from django_escrow_connect.terms import PayeeShare

from .conftest import configure
from .test_milestones import EXTRA, split  # noqa: F401  (fixtures)

GERMAN = {"Accept-Language": "de"}
KWD_STEP = (
    "KWD-Beträge müssen auf 0 enden (Stripe verlangt, dass die letzte der drei "
    "Nachkommastellen null ist)"
)


@pytest.fixture
def locale_middleware(settings):
    # What a host with translated pages has: LocaleMiddleware after sessions.
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(
        middleware.index("django.contrib.sessions.middleware.SessionMiddleware") + 1,
        "django.middleware.locale.LocaleMiddleware",
    )
    settings.MIDDLEWARE = middleware
    settings.LANGUAGE_CODE = "en"


def test_a_service_error_speaks_the_requests_language(market, locale_middleware):
    client = market.client(market.customer)
    url = reverse("escrow_connect:payment-detail", args=[str(uuid.uuid4())])
    german = client.get(url, HTTP_ACCEPT_LANGUAGE="de")
    english = client.get(url, HTTP_ACCEPT_LANGUAGE="en")

    assert german.status_code == english.status_code == 404
    assert german.json()["error"] == {
        "code": "not_found",
        "message": "Diese Zahlung gibt es nicht.",
    }
    assert english.json()["error"] == {"code": "not_found", "message": "No such payment."}
    assert german["Content-Language"] == "de"


def test_a_validation_message_speaks_the_requests_language(market, locale_middleware):
    task = market.task()
    response = market.client(market.customer).post(
        reverse("escrow_connect:payment-create"),
        {"task_id": task.pk, "payee": "someone"},
        format="json",
        HTTP_ACCEPT_LANGUAGE="de",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"] == "Die Anfrage ist ungültig."
    assert error["fields"]["payee"] == ["Dieses Feld wird nicht akzeptiert."]


def test_a_message_with_values_is_translated_around_them(market, locale_middleware):
    payment = market.released_payment()
    response = market.client(market.doer).post(
        reverse("escrow_connect:payment-refund", args=[str(payment.pk)]),
        {"amount": 10_000_000},
        format="json",
        HTTP_ACCEPT_LANGUAGE="de",
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_amount",
        "message": "Die Erstattung muss zwischen 1 und 10000 liegen (kleinste Währungseinheit).",
    }


@pytest.mark.parametrize(
    ("amount", "currency", "extra", "reason"),
    [
        (0, "usd", {}, "Der Betrag muss positiv sein, angegeben: 0."),
        (12_345, "kwd", {}, f"{KWD_STEP}; angegeben: 12345. Auf 12340 oder 12350 runden."),
        (
            123_450,
            "isk",
            {},
            "ISK-Beträge müssen ganze Einheiten sein (in der kleinsten Währungseinheit durch "
            "100 teilbar, Stripe nimmt keine Bruchteile von ISK mehr an); angegeben: 123450. "
            "Auf 123400 oder 123500 runden.",
        ),
        (1_000, "u$d", {}, "Ungültiger Währungscode 'u$d': erwartet werden drei Buchstaben."),
        (
            10_000,
            "usd",
            {"typed_milestones": [("Design", "0"), ("Build", "10000")]},
            "Meilenstein 'Design': Der Betrag muss positiv sein, angegeben: 0.",
        ),
        (
            10_000,
            "usd",
            {"typed_milestones": [("Design", "-1000"), ("Build", "11000")]},
            "Meilenstein 'Design': Der Betrag darf nicht negativ sein, angegeben: -1000.",
        ),
        (
            10_000,
            "kwd",
            {"typed_milestones": [("Design", "2345"), ("Build", "7655")]},
            f"Meilenstein 'Design': {KWD_STEP}; angegeben: 2345. Auf 2340 oder 2350 runden.",
        ),
        (
            10_000,
            "kwd",
            {"payee_amounts": (5_005, 3_995)},
            f"Zahlungsempfänger 1: {KWD_STEP}; angegeben: 5005. Auf 5000 oder 5010 runden.",
        ),
    ],
)
@pytest.mark.usefixtures("split", "locale_middleware")
def test_why_a_price_cannot_be_paid_is_said_in_the_requests_language(
    market, amount, currency, extra, reason
):
    """The reason inside the 409, not only the sentence around it: a German
    customer reads no English (the message ends with the reason, so nothing
    English is left over)."""
    task = market.task(amount=amount, currency=currency)
    if "payee_amounts" in extra:
        lead, other = extra.pop("payee_amounts")
        extra["payees"] = [
            PayeeShare(user=market.doer, amount=lead),
            PayeeShare(user=market.other, amount=other),
        ]
    EXTRA[task.pk] = extra
    response = market.post(
        market.customer, "payment-create", {"task_id": str(task.pk)}, headers=GERMAN
    )
    assert response.status_code == 409, response.content
    assert response.json()["error"] == {
        "code": "no_payment_terms",
        "message": f"Der Preis dieser Aufgabe kann so nicht bezahlt werden: {reason}",
    }


@pytest.mark.parametrize(
    ("operation", "user", "released"),
    [
        ("payment-refund", "doer", True),
        ("payment-release", "customer", False),
        ("payment-tips", "customer", True),
    ],
)
@pytest.mark.usefixtures("split", "locale_middleware")
def test_an_amount_stripe_cannot_take_is_refused_in_the_requests_language(
    market, settings, operation, user, released
):
    """A refund, a partial release or a tip of 1.005 KWD (Stripe takes KWD
    amounts ending in 0): the 400 says why in German."""
    configure(settings, TIP_MAX_AMOUNT={"kwd": 100_000})
    payment = market.pay(market.create(market.task(currency="kwd")).json()["payment_id"])
    if released:
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    response = market.post(
        getattr(market, user), operation, {"amount": 1_005}, payment_id=payment.pk, headers=GERMAN
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"] == {
        "code": "invalid_amount",
        "message": f"{KWD_STEP}; angegeben: 1005. Auf 1000 oder 1010 runden.",
    }
