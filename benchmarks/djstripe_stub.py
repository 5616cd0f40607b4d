"""A local stand-in for Stripe's API, for the dj-stripe peer run only.

dj-stripe 2.11 re-retrieves the objects of a webhook event from Stripe (its
``_handle_crud_like_event`` calls ``api_retrieve()``, and an event's owner
account is retrieved the first time it is seen). Stripe is out of reach here,
so :mod:`benchmarks.djstripe_ingest` starts this server on 127.0.0.1 and points
dj-stripe at it through its ``STRIPE_API_HOST`` setting: dj-stripe's own code
and stripe-python's HTTP client run unchanged; only the far end is local.

It answers ``GET /v1/<resource>/<id>`` with the object carried by the replayed
events themselves (the same payloads), ``GET /v1/account`` with a platform
account, and anything else with Stripe's ``resource_missing`` error (counted as
a miss: the run fails on any). ``GET /__stats`` gives the requests served so far.
A real Stripe round trip takes ~100 ms or more; this one takes about a
millisecond on loopback, so the figures favour dj-stripe.

    python benchmarks/djstripe_stub.py PAYLOADS.json   # prints "port N", then serves
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

#: Stripe's URL segment for each object type the replayed events carry.
RESOURCES = {
    "payment_intent": "payment_intents",
    "charge": "charges",
    "account": "accounts",
    "event": "events",
}
PLATFORM_ACCOUNT_ID = "acct_bench_platform"


def index_objects(payloads: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``/v1/<resource>/<id>`` -> the object, from every event of every round."""
    objects: dict[str, dict[str, Any]] = {}
    for round_ in payloads["rounds"]:
        for deliveries in round_["phases"].values():
            for delivery in deliveries:
                event = json.loads(delivery["body"])
                objects[f"/v1/events/{event['id']}"] = event
                obj = event["data"]["object"]
                resource = RESOURCES.get(obj.get("object", ""))
                if resource:
                    objects[f"/v1/{resource}/{obj['id']}"] = obj
                if obj.get("object") == "charge":
                    objects.update(charge_parts(obj))
    return objects


def charge_parts(charge: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The balance transaction and payment method a charge names, derived from the
    charge itself (dj-stripe retrieves both to store the charge; the events carry
    only their ids)."""
    parts: dict[str, dict[str, Any]] = {}
    txn = charge.get("balance_transaction")
    if isinstance(txn, str):
        parts[f"/v1/balance_transactions/{txn}"] = {
            "id": txn,
            "object": "balance_transaction",
            "amount": charge["amount"],
            "available_on": charge["created"],
            "created": charge["created"],
            "currency": charge["currency"],
            "description": None,
            "exchange_rate": None,
            "fee": 0,
            "fee_details": [],
            "net": charge["amount"],
            "reporting_category": "charge",
            "source": charge["id"],
            "status": "available",
            "type": "charge",
        }
    method = charge.get("payment_method")
    details = charge.get("payment_method_details") or {}
    if isinstance(method, str):
        parts[f"/v1/payment_methods/{method}"] = {
            "id": method,
            "object": "payment_method",
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": details.get("card"),
            "created": charge["created"],
            "customer": charge.get("customer"),
            "livemode": charge.get("livemode", False),
            "metadata": {},
            "type": details.get("type", "card"),
        }
    return parts


def platform_account(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The platform's own account (``GET /v1/account``): a connected account's shape."""
    template = next((o for p, o in objects.items() if p.startswith("/v1/accounts/")), {})
    return {**template, "id": PLATFORM_ACCOUNT_ID, "type": "standard", "controller": None}


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.objects = objects
        self.objects["/v1/account"] = platform_account(objects)
        self.served: Counter[str] = Counter()
        self.misses: list[str] = []
        self.lock = threading.Lock()


class StubHandler(BaseHTTPRequestHandler):
    # Keep-alive, as stripe-python's requests session and Stripe's API use; no Nagle,
    # else the body waits for the client's delayed ACK of the headers (~40 ms).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_bench_stub")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/__stats":
            with self.server.lock:
                stats = {"served": dict(self.server.served), "misses": list(self.server.misses)}
            self.reply(200, stats)
            return
        obj = self.server.objects.get(path)
        kind = path.rsplit("/", 1)[0] if path.count("/") > 2 else path
        with self.server.lock:
            if obj is None:
                self.server.misses.append(f"GET {self.path}")
            else:
                self.server.served[f"GET {kind}/<id>" if kind != path else f"GET {path}"] += 1
        if obj is None:
            self.reply(
                404,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": f"No such object: {path}",
                        "param": "id",
                    }
                },
            )
            return
        self.reply(200, obj)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.server.lock:
            self.server.misses.append(f"POST {self.path}")
        self.reply(400, {"error": {"type": "invalid_request_error", "message": "read-only stub"}})


def main() -> None:
    with open(sys.argv[1]) as fh:
        objects = index_objects(json.load(fh))
    server = StubServer(objects)
    sys.stdout.write(f"port {server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
