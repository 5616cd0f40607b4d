"""Settings of the example marketplace, read from the environment.

Two modes, chosen by ``STRIPE_SECRET_KEY``:

* unset: **SIMULATED** mode. The package's simulated gateway stands in for
  Stripe (no network, no money), events go through the real webhook pipeline,
  signed with the fixed demo secrets below. A banner says so on every page.
  The package's system check refuses the simulated gateway when DEBUG is off.
* ``sk_test_...``: Stripe **test mode** through the real Stripe gateway.
  Forward webhooks with the Stripe CLI (see docs/example.md).

Live keys are refused: this is a demo.

With ``DJANGO_DEBUG=0`` the settings are what a production deployment of a
payments site needs (and ``manage.py check --deploy`` is clean but for the
warnings listed in docs/example.md): a secret key and host names from the
environment, HTTPS only (secure cookies, HSTS, redirect), persistent database
connections with health checks, and errors with their traceback on stderr.
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


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if not value:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    value = env(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


DEBUG = env_bool("DJANGO_DEBUG", True)

#: Development only; refused when DEBUG is off.
DEVELOPMENT_SECRET_KEY = "example-marketplace-insecure-development-key"
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == DEVELOPMENT_SECRET_KEY):
    raise ImproperlyConfigured(
        "Set DJANGO_SECRET_KEY to a long random value when DJANGO_DEBUG is off "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
    )
SECRET_KEY = SECRET_KEY or DEVELOPMENT_SECRET_KEY

if DEBUG:
    ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver", *env_list("ALLOWED_HOSTS")]
else:
    # Production answers only for the names it is deployed under.
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "Set ALLOWED_HOSTS (comma-separated host names) when DJANGO_DEBUG is off."
        )
#: Origins trusted for CSRF on top of the site's own (e.g. https://pay.example.com).
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
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
SIMULATED_THIN_WEBHOOK_SECRET = "whsec_example_marketplace_simulated_thin"

ESCROW_CONNECT_TASK_MODEL = "marketplace.Task"
ESCROW_CONNECT_ORGANIZATION_MODEL = "marketplace.Organization"

ESCROW_CONNECT = {
    "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
    "STRIPE_PUBLISHABLE_KEY": STRIPE_PUBLISHABLE_KEY,
    "STRIPE_API_BASE": env("STRIPE_API_BASE") or None,
    "WEBHOOK_SECRETS": env_list("STRIPE_WEBHOOK_SECRET"),
    "CONNECT_WEBHOOK_SECRETS": env_list("STRIPE_CONNECT_WEBHOOK_SECRET"),
    # ESCROW_ACCOUNTS_API=v2 creates doers' accounts with Accounts v2; their
    # changes then arrive as thin events (STRIPE_THIN_WEBHOOK_SECRET).
    "ACCOUNTS_API": env("ESCROW_ACCOUNTS_API") or "v1",
    "THIN_WEBHOOK_SECRETS": env_list("STRIPE_THIN_WEBHOOK_SECRET"),
    "ORGANIZATION_ADMIN_PREDICATE": "marketplace.permissions.is_organization_admin",
    "ADMINISTERED_ORGANIZATIONS": "marketplace.permissions.administered_organizations",
    "ONBOARDING_RETURN_URL": f"{SITE_URL}/onboarding/return/",
    "ONBOARDING_REFRESH_URL": f"{SITE_URL}/onboarding/refresh/",
    "PLATFORM_FEE_BASIS_POINTS": 1000,
    # Tips after a release: the largest tip per currency, in minor units.
    "TIP_MAX_AMOUNT": {"usd": 10_000, "eur": 10_000, "gbp": 10_000},
    # The pay page offers to save the card for tips (an unticked checkbox
    # with the consent text of docs/tips.md); only then are tips charged
    # off-session.
    "SAVE_PAYMENT_METHODS": True,
    # The "My payouts" page embeds Stripe's payouts and notification banner.
    "EMBEDDED_COMPONENTS": ["account_onboarding", "payouts", "notification_banner"],
    "NOTIFICATION_BACKENDS": ["django_escrow_connect.notifications.backends.LoggingBackend"],
}
if SIMULATED_STRIPE:
    ESCROW_CONNECT.update(
        {
            "GATEWAY": SIMULATED_GATEWAY,
            "WEBHOOK_SECRETS": [SIMULATED_WEBHOOK_SECRET],
            "CONNECT_WEBHOOK_SECRETS": [SIMULATED_CONNECT_WEBHOOK_SECRET],
            "THIN_WEBHOOK_SECRETS": [SIMULATED_THIN_WEBHOOK_SECRET],
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
    return dj_database_url.parse(
        env("DATABASE_URL") or default,
        # Persistent connections in production (the development server starts
        # a thread per request, which would only pile connections up).
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 0 if DEBUG else 60),
        # A connection the database closed meanwhile is replaced, not an error.
        conn_health_checks=True,
    )


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

# --- Production security (DEBUG off) ---------------------------------------------------
if not DEBUG:
    # HTTPS only. Behind a TLS-terminating proxy, the proxy must set
    # X-Forwarded-Proto (and drop any value the client sent); set
    # DJANGO_SECURE_PROXY_SSL_HEADER=0 when Django itself receives HTTPS.
    if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Preloading is a commitment for every subdomain, for months: opt in.
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Django's defaults, stated because a payments site relies on them.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- Logging ----------------------------------------------------------------------------
# Everything goes to stderr, for the process manager or container to collect.
# Django's default sends request errors to the console only while DEBUG is on
# (and to mail_admins otherwise): a production 500 would leave no traceback.
# Here "django" logs to stderr whatever DEBUG says, so an unhandled exception
# in a view is written with its traceback (django.request, exc_info).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "short": {"format": "%(levelname)s %(name)s: %(message)s"},
        "timestamped": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "short" if DEBUG else "timestamped",
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {
            "handlers": ["console"],
            "level": env("DJANGO_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "django_escrow_connect": {
            "handlers": ["console"],
            "level": env("ESCROW_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "marketplace": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
