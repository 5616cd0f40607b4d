from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EscrowConnectConfig(AppConfig):
    name = "django_escrow_connect"
    # The label is the prefix of the swapper settings:
    # ESCROW_CONNECT_<MODEL>_MODEL.
    label = "escrow_connect"
    verbose_name = _("Escrow Connect")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            observability,
        )

        # The observable gauges are registered at start-up, so a metrics
        # exporter sees them before the first span (no-op without OpenTelemetry).
        observability.install()

        from . import signals
        from .services import payments

        # Funding per milestone: a released milestone announces the next one.
        signals.payment_released.connect(
            payments.announce_next_milestone, dispatch_uid="escrow_connect.next_milestone"
        )
