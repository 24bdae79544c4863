"""System checks (core/checks.py)."""

from __future__ import annotations

import sqlite3

from core.checks import sqlite_version_errors

SQLITE = "django.db.backends.sqlite3"


def test_an_sqlite_without_returning_is_refused():
    assert sqlite_version_errors(SQLITE, sqlite3.sqlite_version_info) == []  # this Python's passes
    assert sqlite_version_errors(SQLITE, (3, 35, 0)) == []
    [error] = sqlite_version_errors(SQLITE, (3, 34, 1))
    assert error.id == "core.E002" and "SQLite 3.34.1 is too old" in error.msg and "3.35" in error.msg
    assert sqlite_version_errors("django.db.backends.postgresql", (3, 34, 1)) == []
