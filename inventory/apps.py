from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self) -> None:
        from core.crypto import register_encrypted_field

        register_encrypted_field("inventory.Agent", "credentials")
