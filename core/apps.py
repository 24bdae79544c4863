from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Access and audit"

    def ready(self) -> None:
        from django.core.signals import request_finished
        from django.db.backends.signals import connection_created

        from core import checks, schema  # noqa: F401  (registers the system checks, OpenAPI extensions)
        from core.authentication import token_uses_flush_after_request
        from core.metrics import POOL

        # The database pool gauges follow the pool as connections are taken and given back.
        connection_created.connect(POOL.connection_created, weak=False, dispatch_uid="core.metrics.pool")
        request_finished.connect(POOL.request_finished, weak=False, dispatch_uid="core.metrics.pool")
        # After the response is sent: tokens' last use is written off the request path.
        request_finished.connect(token_uses_flush_after_request, dispatch_uid="token_uses_flush")
