"""Settings of the benchmarks: the test host (``tests.settings``) plus the floor
view's URL and a Django tasks backend for the task-mode request cost."""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls"
DEBUG = False
# Task mode's request: verify + record + enqueue. The dummy backend keeps the
# enqueued task in memory (nothing runs it): what remains is the request's cost.
try:  # Django 6 ships the framework; Django 5.2 uses the django-tasks backport.
    import django.tasks  # noqa: F401

    _TASKS_PACKAGE = "django.tasks"
except ImportError:
    _TASKS_PACKAGE = "django_tasks"
TASKS = {"default": {"BACKEND": f"{_TASKS_PACKAGE}.backends.dummy.DummyBackend"}}
