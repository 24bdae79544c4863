from django.apps import AppConfig

from core.crypto import register_encrypted_field


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self) -> None:
        register_encrypted_field("inventory.Agent", "credentials")
        register_encrypted_field("inventory.DiscoverySeed", "credentials")
