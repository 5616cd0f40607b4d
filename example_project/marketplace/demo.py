"""The people ``seed_demo`` creates (and the login page offers in simulated mode)."""

from __future__ import annotations

from typing import NamedTuple

#: Every demo account's password (simulated mode only: these are public).
DEMO_PASSWORD = "demo-password"


class DemoUser(NamedTuple):
    email: str
    name: str
    role: str


DEMO_USERS = (
    DemoUser("customer@example.com", "Casey Customer", "customer: posts and pays for tasks"),
    DemoUser("doer@example.com", "Dana Doer", "task doer with a verified Stripe account"),
    DemoUser("partner@example.com", "Pia Partner", "Dana's team partner (verified account)"),
    DemoUser("admin@acme.example", "Ada Admin", "admin of Acme Studio (verified account)"),
    DemoUser("member@acme.example", "Milo Member", "member of Acme Studio"),
    DemoUser("newbie@example.com", "Nico Newcomer", "task doer who has not onboarded yet"),
    DemoUser("staff@example.com", "Sam Staff", "platform staff (Django admin)"),
)
DEMO_EMAILS = frozenset(user.email for user in DEMO_USERS)
