from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """The project itself, installed as an app for its process launchers: `manage.py serve` and
    `manage.py run_prod` (management/commands), beside the process configuration they start."""

    name = "config"
    verbose_name = "Process configuration"
