from django.apps import AppConfig
from django.core.signals import request_finished


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Access and audit"

    def ready(self) -> None:
        from core import checks, schema  # noqa: F401  (registers the system checks, OpenAPI extensions)
        from core.authentication import token_uses_flush_after_request

        # After the response is sent: tokens' last use is written off the request path.
        request_finished.connect(token_uses_flush_after_request, dispatch_uid="token_uses_flush")
