"""The bulk side of inventory writes: new rows by COPY on PostgreSQL, and fresh planner statistics after
a large change set (issue 12 §4: a 100,000-device import spent two thirds of its time in INSERTs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, connection, models, transaction

from inventory.models import Agent, Device

log = logging.getLogger(__name__)

# From this many new rows on, COPY; fewer (a discovery result, one POSTed device) take the INSERT
# that every backend has, where COPY saves nothing.
COPY_FROM_ROWS = 100
# A change set of this many devices or more is followed by ANALYZE of devices and agents: without
# statistics (autovacuum not yet run, or off) changes?since found 100 devices' agents by scanning all.
ANALYZE_FROM_DEVICES = 10_000


def uses_copy(rows: int) -> bool:
    return connection.vendor == "postgresql" and rows >= COPY_FROM_ROWS


def insert_rows(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """New rows of `model`: values in the order of `fields` (every concrete field, auto_now ones
    included: nothing is filled in here), as the model's fields hold them (dicts for JSON fields).
    PostgreSQL COPY for many rows, bulk_create otherwise."""
    if not rows:
        return
    if not uses_copy(len(rows)):
        model.objects.bulk_create([model(**dict(zip(fields, row, strict=True))) for row in rows])
        return
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    json_at = [index for index, column in enumerate(columns) if isinstance(column, models.JSONField)]
    quote = connection.ops.quote_name
    sql = f"COPY {quote(meta.db_table)} ({', '.join(quote(column.column) for column in columns)}) FROM STDIN"
    # Values go as text and the server parses them per column type (jsonb, inet, timestamptz); the
    # wrapper turns a failure into Django's exception classes, as a query's would be.
    with connection.wrap_database_errors, connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            if json_at:
                row = list(row)
                for index in json_at:
                    row[index] = json.dumps(row[index])
            copy.write_row(row)


def analyze_after_commit(changed_devices: int) -> None:
    """After a large change set commits, ANALYZE devices and agents (PostgreSQL; a few tenths of a
    second, sampled whatever the tables' size). Outside the transaction, so a failure (a user that does
    not own the tables) only costs the statistics."""
    if connection.vendor != "postgresql" or changed_devices < ANALYZE_FROM_DEVICES:
        return

    quote = connection.ops.quote_name
    sql = f"ANALYZE {quote(Device._meta.db_table)}, {quote(Agent._meta.db_table)}"

    def analyze() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        except DatabaseError:
            log.warning("ANALYZE devices, agents after a large inventory change failed", exc_info=True)

    transaction.on_commit(analyze)
