"""Settings of the benchmarks: the test host (``tests.settings``) plus the floor
view's URL and a Django tasks backend for the task-mode request cost."""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls"
DEBUG = False
# Task mode's request: verify + record + enqueue. The dummy backend keeps the
# enqueued task in memory (nothing runs it): what remains is the request's cost.
TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
