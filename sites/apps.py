from django.apps import AppConfig


class SitesConfig(AppConfig):
    name = "sites"

    def ready(self) -> None:
        # Here, not at the top: the selectors and services import models, which need a ready app registry.
        from core import events, permissions, services
        from sites.selectors import site_exists, site_requires_instance_tokens
        from sites.services import site_next_event_seq

        # What core asks of sites (core imports no domain app): core/hooks.py's Provider.
        events.next_event_seq.provide(site_next_event_seq)
        permissions.instance_tokens_required.provide(site_requires_instance_tokens)
        services.site_exists.provide(site_exists)
