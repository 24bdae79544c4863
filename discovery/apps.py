from django.apps import AppConfig


class DiscoveryConfig(AppConfig):
    name = "discovery"

    def ready(self) -> None:
        from core.crypto import register_encrypted_field

        register_encrypted_field("discovery.DiscoverySeed", "credentials")
