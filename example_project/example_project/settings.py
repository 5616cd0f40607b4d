"""Settings of the example marketplace, read from the environment.

Two modes, chosen by ``STRIPE_SECRET_KEY``:

* unset: **SIMULATED** mode. The package's simulated gateway stands in for
  Stripe (no network, no money), events go through the real webhook pipeline,
  signed with the fixed demo secrets below. A banner says so on every page.
  The package's system check refuses the simulated gateway when DEBUG is off.
* ``sk_test_...``: Stripe **test mode** through the real Stripe gateway.
  Forward webhooks with the Stripe CLI (see docs/example.md).

Live keys are refused: this is a demo.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BASE_DIR.parent
# Run from a checkout without installing the package.
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_list(name: str) -> list[str]:
    return [item.strip() for item in env(name).split(",") if item.strip()]


DEBUG = env("DJANGO_DEBUG", "1").lower() in ("1", "true", "yes", "on")
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY when DJANGO_DEBUG is off.")
    SECRET_KEY = "example-marketplace-insecure-development-key"

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver", *env_list("ALLOWED_HOSTS")]
#: Where Stripe sends people back after onboarding (absolute URLs).
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- Stripe -------------------------------------------------------------------------------
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY")
if STRIPE_SECRET_KEY.startswith(("sk_live_", "rk_live_")):
    raise ImproperlyConfigured(
        "The example marketplace refuses live Stripe keys: use sk_test_... keys, or none "
        "for simulated mode."
    )
#: No secret key: simulated mode.
SIMULATED_STRIPE = not STRIPE_SECRET_KEY
SIMULATED_GATEWAY = "django_escrow_connect.simulation.SimulatedGateway"
#: Fixed, public webhook secrets of simulated mode: the simulated gateway signs
#: its events with them and the real webhook pipeline verifies them.
SIMULATED_WEBHOOK_SECRET = "whsec_example_marketplace_simulated_platform"
SIMULATED_CONNECT_WEBHOOK_SECRET = "whsec_example_marketplace_simulated_connect"

ESCROW_CONNECT_TASK_MODEL = "marketplace.Task"
ESCROW_CONNECT_ORGANIZATION_MODEL = "marketplace.Organization"

ESCROW_CONNECT = {
    "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
    "STRIPE_PUBLISHABLE_KEY": STRIPE_PUBLISHABLE_KEY,
    "STRIPE_API_BASE": env("STRIPE_API_BASE") or None,
    "WEBHOOK_SECRETS": env_list("STRIPE_WEBHOOK_SECRET"),
    "CONNECT_WEBHOOK_SECRETS": env_list("STRIPE_CONNECT_WEBHOOK_SECRET"),
    "ORGANIZATION_ADMIN_PREDICATE": "marketplace.permissions.is_organization_admin",
    "ONBOARDING_RETURN_URL": f"{SITE_URL}/onboarding/return/",
    "ONBOARDING_REFRESH_URL": f"{SITE_URL}/onboarding/refresh/",
    "PLATFORM_FEE_BASIS_POINTS": 1000,
    "NOTIFICATION_BACKENDS": ["django_escrow_connect.notifications.backends.LoggingBackend"],
}
if SIMULATED_STRIPE:
    ESCROW_CONNECT.update(
        {
            "GATEWAY": SIMULATED_GATEWAY,
            "WEBHOOK_SECRETS": [SIMULATED_WEBHOOK_SECRET],
            "CONNECT_WEBHOOK_SECRETS": [SIMULATED_CONNECT_WEBHOOK_SECRET],
        }
    )

#: Simulated mode keeps the simulated Stripe's memory in this file, so a
#: restart (or the autoreloader) and the management commands see the same
#: accounts and payments as the database. None: in memory only (tests).
SIMULATED_STRIPE_STATE_FILE: Path | None = (
    Path(env("SIMULATED_STRIPE_STATE_FILE") or BASE_DIR / "var" / "simulated-stripe.sqlite3")
    if SIMULATED_STRIPE
    else None
)

# --- Django ---------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "marketplace",
    "django_escrow_connect",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "marketplace.simulated_state.SimulatedStateMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "marketplace.context_processors.marketplace",
            ]
        },
    }
]


def _database() -> dict:
    import dj_database_url

    default = f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"
    return dj_database_url.parse(env("DATABASE_URL") or default, conn_max_age=0)


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "marketplace.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"short": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "short"}},
    "loggers": {
        "django_escrow_connect": {
            "handlers": ["console"],
            "level": env("ESCROW_LOG_LEVEL", "INFO"),
        },
        "marketplace": {"handlers": ["console"], "level": "INFO"},
    },
}
