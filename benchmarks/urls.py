"""The test host's URLs plus the floor view (benchmarks/floor.py)."""

from django.urls import path

from benchmarks.floor import floor_view
from tests.urls import urlpatterns as host_urlpatterns

urlpatterns = [*host_urlpatterns, path("bench/floor/", floor_view, name="bench-floor")]
