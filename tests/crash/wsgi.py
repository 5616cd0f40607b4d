"""WSGI entry point of the crash suite's gunicorn servers."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.crash.settings")

application = get_wsgi_application()
