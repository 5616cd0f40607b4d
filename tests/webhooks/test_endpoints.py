"""What the webhook endpoints promise, proven once and run against each.

:class:`EndpointContract` is the shared case (like django-anymail's
``WebhookTestCase``): every check runs for the platform endpoint, the
Connect endpoint and the thin-event endpoint. Every refused delivery must answer 4xx *and* leave the
event log empty. Requests go through ``Client(enforce_csrf_checks=True)``
with ``ATOMIC_REQUESTS = True``, as in a strict host project.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.urls import resolve

from django_escrow_connect.simulation import SIMULATED_WEBHOOK_SECRET, SimulatedGateway
from django_escrow_connect.states import WebhookEndpoint
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import (
    CONNECT_SECRET,
    PLATFORM_SECRET,
    THIN_SECRET,
    events,
    url_for,
)

pytestmark = pytest.mark.django_db


def docs_stripe_signature() -> Any:
    """``stripe_signature`` as docs/webhooks.md defines it, from its first code block there."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    section = docs.split("### A signed event by hand", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the documented snippet, nothing else
    return namespace["stripe_signature"]


class SimulationWithoutOwnSecret(SimulatedGateway):
    """A gateway that never verifies without a configured secret."""

    verifies_without_configured_secrets = False


@pytest.fixture(autouse=True)
def atomic_requests() -> Any:
    settings_dict = connections["default"].settings_dict
    previous = settings_dict.get("ATOMIC_REQUESTS", False)
    settings_dict["ATOMIC_REQUESTS"] = True
    yield
    settings_dict["ATOMIC_REQUESTS"] = previous


def escrow_settings(settings: Any, **values: Any) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, **values}


class EndpointContract:
    """The checks every endpoint passes; subclasses name the endpoint."""

    endpoint: str = ""
    secret: str = ""
    other_secret: str = ""
    secrets_setting: str = ""
    skips_test_events_when_live: bool = False

    def event(self, **kwargs: Any) -> dict[str, Any]:
        """An event of a type nothing handles: recorded, then ignored."""
        raise NotImplementedError

    def refused_again(self, response: Any) -> None:
        """Refused, with earlier deliveries of the test still in the log."""
        assert response.status_code == 400, response.content
        assert json.loads(response.content)["error"]["code"] == "invalid_webhook"

    def refused(self, response: Any, status: int = 400) -> None:
        assert response.status_code == status, response.content
        error = json.loads(response.content)["error"]
        assert error["code"] == "invalid_webhook"
        assert error["message"]
        assert events().count() == 0

    # --- accepted ---------------------------------------------------------------

    def test_signed_event_is_recorded_once(self, deliver: Any) -> None:
        evt = self.event()
        response = deliver.post(self.endpoint, evt)
        assert response.status_code == 200, response.content
        assert response.json() == {"received": True, "status": "ignored", "event": evt["id"]}
        row = events().get()
        assert row.stripe_event_id == evt["id"]
        assert row.endpoint == self.endpoint
        assert row.account == (evt.get("account") or "")
        assert row.type == evt["type"]
        assert row.object_id == evt["data"]["object"]["id"]
        assert row.stripe_created is not None
        assert row.payload["id"] == evt["id"]

    def test_client_secrets_are_not_stored(self, deliver: Any) -> None:
        intent = so.payment_intent()
        evt = self.event(obj=intent)
        assert deliver.post(self.endpoint, evt).status_code == 200
        stored = events().get().payload["data"]["object"]
        assert stored["id"] == intent["id"]
        assert stored["client_secret"] is None

    def test_rotation_accepts_old_and_new_secret(self, deliver: Any, settings: Any) -> None:
        escrow_settings(settings, **{self.secrets_setting: ["whsec_rotated_new", self.secret]})
        new = deliver.post(self.endpoint, self.event(), secret="whsec_rotated_new")
        old = deliver.post(self.endpoint, self.event(), secret=self.secret)
        assert (new.status_code, old.status_code) == (200, 200)
        assert events().count() == 2
        response = deliver.post(self.endpoint, self.event(), secret="whsec_retired")
        assert response.status_code == 400
        assert events().count() == 2

    # --- refused: signature ------------------------------------------------------------

    def test_forged_signature(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, self.event(), secret="whsec_forged"))

    def test_missing_signature(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, self.event(), sign=False))

    def test_malformed_signature(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, self.event(), signature="t=abc,v1="))

    def test_stale_timestamp(self, deliver: Any, settings: Any) -> None:
        escrow_settings(settings, WEBHOOK_TOLERANCE_SECONDS=300)
        response = deliver.post(self.endpoint, self.event(), timestamp=int(time.time()) - 301)
        self.refused(response)
        assert "old" in response.json()["error"]["message"]

    def test_zero_tolerance_still_refuses_old_signatures(self, deliver: Any, settings: Any) -> None:
        escrow_settings(settings, WEBHOOK_TOLERANCE_SECONDS=0)
        old = int(time.time()) - 3600
        self.refused(deliver.post(self.endpoint, self.event(), timestamp=old))

    def test_other_endpoints_secret(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, self.event(), secret=self.other_secret))

    def test_signature_of_another_body(self, deliver: Any) -> None:
        signed = so.encode(self.event())
        from django_escrow_connect.gateway.signing import sign_webhook_payload

        header = sign_webhook_payload(signed, self.secret)
        self.refused(deliver.post(self.endpoint, self.event(), signature=header))

    def test_no_secret_configured(self, deliver: Any, settings: Any) -> None:
        escrow_settings(settings, **{self.secrets_setting: []})
        self.refused(deliver.post(self.endpoint, self.event()))

    def test_simulated_gateway_without_secrets_takes_only_its_own_events(
        self, deliver: Any, settings: Any, sim_stripe: Any
    ) -> None:
        # docs/simulated.md: a development host on the simulated Stripe sets no
        # whsec_; the simulation signs with its own secret, and only that one
        # verifies. A bare string is still refused as a whole.
        escrow_settings(settings, **{self.secrets_setting: "whsec_string_setting"})
        self.refused(deliver.post(self.endpoint, self.event(), secret=SIMULATED_WEBHOOK_SECRET))
        escrow_settings(settings, **{self.secrets_setting: []})
        self.refused(deliver.post(self.endpoint, self.event()))
        evt = self.event()
        response = deliver.post(self.endpoint, evt, secret=SIMULATED_WEBHOOK_SECRET)
        assert response.status_code == 200, response.content
        assert events().get().stripe_event_id == evt["id"]

    def test_an_event_signed_by_hand_as_the_docs_show(
        self, deliver: Any, settings: Any, sim_stripe: Any
    ) -> None:
        # docs/webhooks.md, "A signed event by hand": the recipe, run as
        # written, against a configured secret and the simulation's own.
        from django_escrow_connect.simulation import signing_secret

        stripe_signature = docs_stripe_signature()
        for secrets in ([self.secret], []):
            escrow_settings(settings, **{self.secrets_setting: secrets})
            evt = self.event()
            body = so.encode(evt)
            secret = signing_secret(self.endpoint)
            response = deliver.post(self.endpoint, body, signature=stripe_signature(body, secret))
            assert response.status_code == 200, response.content
            assert response.json()["status"] == "ignored"
            assert events().filter(stripe_event_id=evt["id"]).exists()
        # The recipe with another secret: refused, and nothing is recorded.
        forged_event = self.event()
        forged_body = so.encode(forged_event)
        forged = stripe_signature(forged_body, "whsec_not_the_endpoints")
        self.refused_again(deliver.post(self.endpoint, forged_body, signature=forged))
        assert not events().filter(stripe_event_id=forged_event["id"]).exists()

    def test_without_secrets_it_is_the_gateway_that_decides(
        self, deliver: Any, settings: Any, sim_stripe: Any
    ) -> None:
        # Not the gateway's class: a simulation that says it does not verify
        # without configured secrets gets nothing through an empty setting.
        escrow_settings(
            settings,
            GATEWAY=f"{__name__}.SimulationWithoutOwnSecret",
            **{self.secrets_setting: []},
        )
        response = deliver.post(self.endpoint, self.event(), secret=SIMULATED_WEBHOOK_SECRET)
        self.refused(response)
        assert "No signing secret configured" in response.json()["error"]["message"]
        assert not events().exists()

    @pytest.mark.parametrize("signed_with", ["w", "whsec_string_setting"])
    def test_a_string_setting_is_no_secret_at_all(
        self, deliver: Any, settings: Any, caplog: Any, signed_with: str
    ) -> None:
        # A bare string is not read as its characters (an event signed with
        # "w" verified), nor as one secret: every delivery is refused and the
        # log says why (system check E020/E072 reports it too).
        escrow_settings(settings, **{self.secrets_setting: "whsec_string_setting"})
        with caplog.at_level("WARNING", logger="django_escrow_connect.webhooks"):
            response = deliver.post(self.endpoint, self.event(), secret=signed_with)
        self.refused(response)
        message = response.json()["error"]["message"]
        assert "not a list of signing secrets" in message
        assert self.secrets_setting in message
        assert any("not a list of signing secrets" in r.getMessage() for r in caplog.records)

    # --- refused: body --------------------------------------------------------------------

    def test_declared_body_over_limit_is_not_read(self, deliver: Any, settings: Any) -> None:
        escrow_settings(settings, WEBHOOK_MAX_BODY_BYTES=1024)
        response = deliver.post(self.endpoint, self.event(), CONTENT_LENGTH="10000000")
        self.refused(response, 413)

    def test_body_over_limit(self, deliver: Any, settings: Any) -> None:
        escrow_settings(settings, WEBHOOK_MAX_BODY_BYTES=256)
        self.refused(deliver.post(self.endpoint, self.event()), 413)

    def test_body_over_limit_without_content_length(self, settings: Any) -> None:
        """A chunked ASGI request declares no length: the bytes read are counted."""
        escrow_settings(settings, WEBHOOK_MAX_BODY_BYTES=256)
        payload = so.encode(self.event())
        scope = {
            "type": "http",
            "method": "POST",
            "path": url_for(self.endpoint),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        }
        request = ASGIRequest(scope, io.BytesIO(payload))
        assert "CONTENT_LENGTH" not in request.META
        view = resolve(url_for(self.endpoint)).func
        self.refused(view(request), 413)

    def test_empty_body(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, b""))

    def test_not_utf8(self, deliver: Any) -> None:
        body = b'{"id": "evt_1", "type": "x", "note": "\xff\xfe"}'
        self.refused(deliver.post(self.endpoint, body))

    def test_not_json(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, b"id=evt_1&type=charge.succeeded"))

    def test_json_but_not_an_event(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, b'[{"id": "evt_1", "type": "x"}]'))
        evt = self.event()
        del evt["data"]
        self.refused(deliver.post(self.endpoint, evt))

    # --- refused: mode and method -----------------------------------------------------------

    def test_live_event_on_test_key(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, self.event(livemode=True)))

    def test_test_event_on_live_key(self, deliver: Any, settings: Any) -> None:
        escrow_settings(
            settings,
            STRIPE_SECRET_KEY="sk_live_escrowconnecttests",
            STRIPE_PUBLISHABLE_KEY="pk_live_escrowconnecttests",
        )
        response = deliver.post(self.endpoint, self.event(livemode=False))
        if self.skips_test_events_when_live:
            # Stripe sends a live Connect endpoint the test-mode events of
            # accounts connected in both modes: acknowledged, never stored.
            assert response.status_code == 200, response.content
            assert response.json() == {"received": True, "status": "skipped"}
            assert events().count() == 0
        else:
            self.refused(response)
        assert deliver.post(self.endpoint, self.event(livemode=True)).status_code == 200
        assert events().count() == 1

    @pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
    def test_only_post(self, deliver: Any, method: str) -> None:
        response = getattr(deliver.client, method)(url_for(self.endpoint))
        assert response.status_code == 405
        assert response["Allow"] == "POST"
        assert events().count() == 0


class TestPlatformEndpoint(EndpointContract):
    endpoint = WebhookEndpoint.PLATFORM
    secret = PLATFORM_SECRET
    other_secret = CONNECT_SECRET
    secrets_setting = "WEBHOOK_SECRETS"

    def event(self, obj: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        return so.event("escrow_test.unhandled", obj or so.charge(), **kwargs)

    def test_connect_event_is_refused(self, deliver: Any) -> None:
        evt = self.event(account="acct_1TestConnected000001")
        self.refused(deliver.post(self.endpoint, evt))


class TestConnectEndpoint(EndpointContract):
    endpoint = WebhookEndpoint.CONNECT
    secret = CONNECT_SECRET
    other_secret = PLATFORM_SECRET
    secrets_setting = "CONNECT_WEBHOOK_SECRETS"
    skips_test_events_when_live = True

    def event(self, obj: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("account", "acct_1TestConnected000001")
        return so.event("escrow_test.unhandled", obj or so.payout(), **kwargs)

    def test_event_without_account_is_refused(self, deliver: Any) -> None:
        evt = self.event()
        del evt["account"]
        self.refused(deliver.post(self.endpoint, evt))

    def test_a_forged_test_event_on_a_live_key_is_still_refused(
        self, deliver: Any, settings: Any
    ) -> None:
        """Only a well-signed, well-formed test-mode event is skipped."""
        escrow_settings(
            settings,
            STRIPE_SECRET_KEY="sk_live_escrowconnecttests",
            STRIPE_PUBLISHABLE_KEY="pk_live_escrowconnecttests",
        )
        self.refused(deliver.post(self.endpoint, self.event(livemode=False), secret="whsec_x"))
        evt = self.event(livemode=False)
        del evt["account"]
        self.refused(deliver.post(self.endpoint, evt))

    def test_platform_event_type_is_ignored_here(self, deliver: Any) -> None:
        """A type handled only on the platform endpoint is recorded and ignored."""
        evt = so.event(
            "payment_intent.succeeded", so.payment_intent(), account="acct_1TestConnected000001"
        )
        response = deliver.post(self.endpoint, evt)
        assert response.json()["status"] == "ignored"
        assert events().get().status == "ignored"


class TestThinEndpoint(EndpointContract):
    """``stripe/webhook/thin/``: an event destination with thin payloads."""

    endpoint = WebhookEndpoint.THIN
    secret = THIN_SECRET
    other_secret = CONNECT_SECRET
    secrets_setting = "THIN_WEBHOOK_SECRETS"
    skips_test_events_when_live = True

    def event(self, obj: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        return so.thin_event("v2.escrow_test.unhandled", **kwargs)

    def test_signed_event_is_recorded_once(self, deliver: Any) -> None:
        evt = self.event()
        response = deliver.post(self.endpoint, evt)
        assert response.status_code == 200, response.content
        assert response.json() == {"received": True, "status": "ignored", "event": evt["id"]}
        row = events().get()
        assert (row.stripe_event_id, row.type, row.endpoint) == (evt["id"], evt["type"], "thin")
        assert row.thin is True
        assert row.object_id == row.account == "acct_1TestConnected000001"
        assert row.stripe_created.isoformat() == "2026-11-20T10:00:00+00:00"
        assert row.payload == evt

    def test_client_secrets_are_not_stored(self, deliver: Any) -> None:
        """A thin payload has no object, so no secret: it is stored as it came."""
        evt = {**self.event(), "client_secret": "pi_123_secret_456"}
        assert deliver.post(self.endpoint, evt).status_code == 200
        assert events().get().payload["client_secret"] is None

    def test_json_but_not_an_event(self, deliver: Any) -> None:
        self.refused(deliver.post(self.endpoint, b'[{"id": "evt_1", "type": "x"}]'))
        for broken in (
            {"object": "event"},  # a snapshot event's object
            {"created": 1763632800},  # v1's unix seconds
            {"created": "yesterday"},
            {"related_object": "acct_1TestConnected000001"},
            {"related_object": {"id": "", "type": "v2.core.account"}},
            {"context": ["acct_1"]},
        ):
            self.refused(deliver.post(self.endpoint, {**self.event(), **broken}))

    def test_a_snapshot_event_is_refused(self, deliver: Any) -> None:
        evt = so.event("account.updated", so.payout(), account="acct_1TestConnected000001")
        self.refused(deliver.post(self.endpoint, evt))

    def test_a_thin_event_is_refused_on_the_connect_endpoint(self, deliver: Any) -> None:
        evt = {**self.event(), "account": "acct_1TestConnected000001"}
        response = deliver.post(WebhookEndpoint.CONNECT, evt)
        self.refused(response)

    def test_a_duplicate_delivery_is_recorded_once(self, deliver: Any) -> None:
        evt = self.event()
        first = deliver.post(self.endpoint, evt)
        again = deliver.post(self.endpoint, evt)
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["status"] == "duplicate"
        assert events().count() == 1

    def test_a_handled_type_for_an_unknown_account_is_deferred(self, deliver: Any) -> None:
        evt = so.thin_event("v2.core.account[requirements].updated")
        response = deliver.post(self.endpoint, evt)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "deferred"
        assert events().get().status == "deferred"

    def test_a_handled_type_about_another_object_is_ignored(self, deliver: Any) -> None:
        evt = so.thin_event(
            "v2.core.account[requirements].updated",
            "person_1",
            related_type="v2.core.account_person",
        )
        response = deliver.post(self.endpoint, evt)
        assert response.json()["status"] == "ignored"
