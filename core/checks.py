"""System checks: configuration that must be right before the server starts (manage.py check, serve)."""

import sqlite3

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


SQLITE_MINIMUM = (3, 35)  # UPDATE … RETURNING (the heartbeat's one statement, instances/services.py)


def sqlite_version_errors(engine: str, version: tuple[int, ...]) -> list[Error]:
    if not engine.endswith("sqlite3") or version >= SQLITE_MINIMUM:
        return []
    found, needed = ".".join(map(str, version)), ".".join(map(str, SQLITE_MINIMUM))
    return [
        Error(
            f"SQLite {found} is too old: the embedded default needs SQLite {needed} or later "
            "(UPDATE … RETURNING).",
            hint="Use a Python whose sqlite3 module links SQLite 3.35+ (Debian 12, Ubuntu 22.04 and later), "
            "or PostgreSQL (DATABASE_URL).",
            id="core.E002",
        )
    ]


@register()
def sqlite_version_check(app_configs, **kwargs):
    return sqlite_version_errors(settings.DATABASES["default"]["ENGINE"], sqlite3.sqlite_version_info)
