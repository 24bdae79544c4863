"""A cursor for the few statements that run on every request (the token's read, the heartbeat's write)."""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import Model


def prepared_cursor():
    """Django's cursor (counted, logged and wrapped as any other) whose statements PostgreSQL binds itself and
    keeps prepared: for fixed SQL texts that run on every request, parsed and planned once per pooled
    connection (psycopg's prepare_threshold, config/settings.py) rather than at every call. Measured
    (bench/README.md): about half the backend's CPU of a heartbeat. Name the columns in such statements,
    never `SELECT *`: a prepared statement whose result columns change under it (a migration adding one)
    fails until its connection is replaced. Elsewhere (SQLite) the ordinary cursor."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = ServerBindingCursor(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


def select_columns(model: type[Model]) -> str:
    """The model's columns, in the order model_from_row() reads them."""
    return ", ".join(connection.ops.quote_name(field.column) for field in model._meta.concrete_fields)


@cache
def _converters(model: type[Model], vendor: str) -> tuple:
    converters = []
    for field in model._meta.concrete_fields:
        column = field.get_col(model._meta.db_table)
        converters.append(
            (column, tuple(connection.ops.get_db_converters(column) + column.get_db_converters(connection)))
        )
    return tuple(converters)


def model_from_row(model: type[Model], row) -> Model:
    """An instance from a row of select_columns(model), with the conversions the ORM applies."""
    values = []
    for value, (column, converters) in zip(row, _converters(model, connection.vendor), strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        values.append(value)
    return model.from_db(connection.alias, [field.attname for field in model._meta.concrete_fields], values)
