"""The same suite against a host that swaps everything it can: a custom user
model with email login and no username, a Task with a UUID primary key, its
own organization model, and the escrow payment model replaced by a subclass
with one extra field."""

from .settings import *  # noqa: F403
from .settings import ESCROW_CONNECT, INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "tests.testapp"] + ["tests.swappedapp"]

AUTH_USER_MODEL = "swappedapp.Member"
ESCROW_CONNECT_TASK_MODEL = "swappedapp.Job"
ESCROW_CONNECT_ORGANIZATION_MODEL = "swappedapp.Team"
ESCROW_CONNECT_ESCROWPAYMENT_MODEL = "swappedapp.TrackedEscrowPayment"

ESCROW_CONNECT = {
    **ESCROW_CONNECT,
    "ORGANIZATION_ADMIN_PREDICATE": "tests.swappedapp.models.is_team_admin",
    "ADMINISTERED_ORGANIZATIONS": "tests.swappedapp.models.administered_teams",
}

ESCROW_TEST_HOST = "swappedapp"
