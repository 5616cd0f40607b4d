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
    assert set(request["properties"]) == {"task_id", "amount"}  # no currency, no payee
    assert request["properties"]["amount"]["type"] == "integer"
    listing = paths["/escrow/payments/"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"role", "organization_id", "page"}
    for path in (
        "/escrow/payments/{payment_id}/",
        "/escrow/payments/confirm/{payment_id}/",
        "/escrow/payments/{payment_id}/refund/",
        "/escrow/payments/{payment_id}/cancel/",
        "/escrow/payments/{payment_id}/retry/",
        "/escrow/dashboard/task-doer/",
        "/escrow/dashboard/customer/",
    ):
        assert path in paths
