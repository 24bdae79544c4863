from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        from fleet.metrics import register_manager_collector  # needs the app registry ready

        # The spec's manager metrics (leaders, heartbeats, discovery) on /metrics, read at scrape time.
        register_manager_collector()
