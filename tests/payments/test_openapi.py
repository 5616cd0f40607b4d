"""The payment endpoints document themselves (drf-spectacular), without warnings."""

from __future__ import annotations

import pytest

pytest.importorskip("drf_spectacular")


def test_payment_endpoints_generate_a_clean_schema(capsys):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    emitted = capsys.readouterr().err
    ours = [line for line in emitted.splitlines() if "api/payments.py" in line]
    assert not ours, ours

    paths = schema["paths"]
    create = paths["/escrow/payments/create/"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    # No currency, no payee: the terms say them; the consent to save the card is the
    # customer's own.
    assert set(request["properties"]) == {"task_id", "amount", "milestone", "save_payment_method"}
    assert request["properties"]["amount"]["type"] == "integer"
    # A price Stripe cannot charge, refused early or by Stripe, is named among the 409s.
    assert "Stripe cannot charge" in create["responses"]["409"]["description"]
    listing = paths["/escrow/payments/"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"role", "organization_id", "page"}
    for path in (
        "/escrow/payments/{payment_id}/",
        "/escrow/payments/confirm/{payment_id}/",
        "/escrow/payments/{payment_id}/refund/",
        "/escrow/payments/{payment_id}/cancel/",
        "/escrow/payments/{payment_id}/retry/",
        "/escrow/payments/{payment_id}/release/",
        "/escrow/payments/{payment_id}/milestones/{milestone_id}/deliver/",
        "/escrow/dashboard/task-doer/",
        "/escrow/dashboard/customer/",
    ):
        assert path in paths


def _properties(schema, component):
    """A component's properties, ``$ref``s and arrays of ``$ref``s resolved one level."""
    components = schema["components"]["schemas"]
    found = {}
    for name, prop in components[component]["properties"].items():
        ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
        if ref is None and "allOf" in prop:
            ref = prop["allOf"][0]["$ref"]
        found[name] = ref.rsplit("/", 1)[-1] if ref else None
    return found


@pytest.mark.django_db
def test_a_payment_answer_has_exactly_the_documented_fields(market, settings):
    """One serializer is both the answer and the schema: they cannot drift apart."""
    from drf_spectacular.generators import SchemaGenerator

    from .conftest import configure

    configure(settings, ESCROW_STRATEGY="separate_charges_and_transfers")
    payment = market.released_payment()
    assert (
        market.post(
            market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk
        ).status_code
        == 200
    )
    answer = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
    assert answer["transfers"]
    assert answer["refunds"]

    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = _properties(schema, "PaymentOutput")
    assert list(answer) == list(documented)
    for name in ("formatted", "payee", "failure", "timestamps"):
        if answer[name] is not None:
            assert set(answer[name]) == set(
                schema["components"]["schemas"][documented[name]]["properties"]
            ), name
    for name in ("transfers", "refunds"):
        nested = schema["components"]["schemas"][documented[name]]["properties"]
        assert set(answer[name][0]) == set(nested), name
    # Dates are isoformat() as stored ("+00:00"), as the API always answered.
    assert answer["timestamps"]["released_at"].endswith("+00:00")


@pytest.mark.django_db
def test_milestones_and_payees_have_exactly_the_documented_fields(market, settings):
    from drf_spectacular.generators import SchemaGenerator

    from django_escrow_connect.terms import MilestoneTerms, PayeeShare
    from tests import factories

    from .conftest import configure, stripe_account
    from .test_milestones import EXTRA, held

    configure(
        settings,
        ESCROW_STRATEGY="separate_charges_and_transfers",
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
    )
    partner = factories.make_user("partner")
    stripe_account(owner_user=partner)
    payment = held(
        market,
        milestones=[MilestoneTerms("A", 4_000), MilestoneTerms("B", 6_000)],
        payees=[
            PayeeShare(user=market.doer, basis_points=5_000),
            PayeeShare(user=partner, basis_points=5_000),
        ],
    )
    EXTRA.clear()
    market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    answer = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    documented = _properties(schema, "PaymentOutput")
    assert list(answer) == list(documented)
    for name in ("milestones", "payees"):
        assert set(answer[name][0]) == set(components[documented[name]]["properties"]), name
    payee_transfer = _properties(schema, documented["payees"])["transfers"]
    assert set(answer["payees"][0]["transfers"][0]) == set(components[payee_transfer]["properties"])
