"""System checks: configuration that must be right before the server starts (manage.py check, serve)."""

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from core.crypto import KeyRing


@register()
def encryption_keys_check(app_configs, **kwargs):
    try:
        KeyRing.parse(settings.FIELD_ENCRYPTION_KEYS)
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="Give 32-byte keys as base64: FIELD_ENCRYPTION_KEYS=k2:<base64>,k1:<base64>",
                id="core.E001",
            )
        ]
    return []
