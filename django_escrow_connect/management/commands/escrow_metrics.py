"""``manage.py escrow_metrics``: the numbers to graph and alert on, for a scraper.

Prints :func:`~django_escrow_connect.observability.metrics_snapshot` as JSON
(default) or, with ``--format prometheus``, in the Prometheus text exposition
format, e.g. from cron into a node-exporter textfile collector. The
database gauges (open incidents, held payments and their age, unresolved
money calls) cost four aggregate queries. The counters are this process's
only: a command run from cron starts at zero, so export the web and worker
processes' counters through OpenTelemetry (see ``docs/observability.md``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...observability import metrics_snapshot, render_prometheus


class Command(BaseCommand):
    help = "Print open incidents, held payments and unresolved money calls (JSON or Prometheus)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["json", "prometheus"], default="json")

    def handle(self, *args: Any, **options: Any) -> None:
        snapshot = metrics_snapshot()
        if options["format"] == "prometheus":
            self.stdout.write(render_prometheus(snapshot), ending="")
        else:
            self.stdout.write(json.dumps(snapshot, indent=2, sort_keys=True))
