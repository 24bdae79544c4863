from django.apps import AppConfig

from core.crypto import register_encrypted_field


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self) -> None:
        register_encrypted_field("inventory.Agent", "credentials")
        register_encrypted_field("inventory.DiscoverySeed", "credentials")
        register_encrypted_field("inventory.ImportPayload", "data")  # an import job's document
        # The tasks, registered in every process (Celery's autodiscovery imports them in workers only):
        # web processes queue import jobs by the task's name (inventory.jobs).
        from inventory import tasks  # noqa: F401
