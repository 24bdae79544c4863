from django.apps import AppConfig


class SitesConfig(AppConfig):
    name = "sites"

    def ready(self) -> None:
        from core.events import set_sequencer
        from sites.services import site_next_event_seq

        set_sequencer(site_next_event_seq)
