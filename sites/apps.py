from django.apps import AppConfig


class SitesConfig(AppConfig):
    name = "sites"

    def ready(self) -> None:
        from core.events import set_sequencer
        from core.permissions import set_instance_token_policy
        from sites.selectors import site_requires_instance_tokens
        from sites.services import site_next_event_seq

        set_sequencer(site_next_event_seq)
        set_instance_token_policy(site_requires_instance_tokens)
