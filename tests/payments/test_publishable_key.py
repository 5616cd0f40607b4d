"""The browser gets the publishable key (issue 12): in the create response and
through the ``stripe_publishable_key`` template tag; never the secret key."""

from __future__ import annotations

import pytest
from django.template import Context, Template

pytestmark = pytest.mark.django_db


def test_create_response_carries_the_publishable_key(market, sim_stripe):
    created = market.create(market.task())
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["publishable_key"] == "pk_test_escrowconnecttests"
    assert "sk_test" not in created.content.decode()


def test_template_tag_renders_the_publishable_key(settings):
    html = Template(
        '{% load escrow_stripe %}{% stripe_publishable_key as key %}{{ key|json_script:"k" }}'
        "[{% stripe_publishable_key %}]"
    ).render(Context())
    assert '"pk_test_escrowconnecttests"' in html
    assert "[pk_test_escrowconnecttests]" in html
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "STRIPE_PUBLISHABLE_KEY": ""}
    assert (
        Template("{% load escrow_stripe %}[{% stripe_publishable_key %}]").render(Context()) == "[]"
    )
