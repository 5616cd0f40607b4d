"""API error messages follow the request's language; the codes never change."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse


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
