"""Writes to sites. Callers pass validated values in model-field names (see sites/api.py)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, connection, transaction

from core.audit import Actor, audit_record
from core.errors import ConflictError, NotFoundError
from core.events import end_sessions, publish, site_group
from core.hooks import Hook
from sites.models import CONFIG_DEFAULTS, CONFIG_FIELDS, Site

PROFILE_FIELDS = ("label", "description", "address", "latitude", "longitude")
CONFIG_MODEL_FIELDS = tuple(CONFIG_FIELDS.values())
_WIRE_NAME = {field: wire for wire, field in CONFIG_FIELDS.items()}
# The instance-side name where it differs from the site's (docs/protocol.md).
_INSTANCE_NAME = {"timezone": "discoveryTimezone"}
# The fields the site's discovery schedule is made of.
SCHEDULE_FIELDS = {"discovery_cron", "timezone", "discovery_enabled"}
# Discovery keeps its beat entries in step with a site (subscribed in its ready(): sites imports no app
# above it). Called inside the write's transaction: what they write rolls back with the site, and their
# failure fails the write.
site_schedule_changed: Hook[[Site]] = Hook("site_schedule_changed", raise_errors=True)
site_removed: Hook[[str]] = Hook("site_removed", raise_errors=True)


def site_get_locked(site_id: str) -> Site:
    """The site row, locked until the transaction ends (every leadership or version change)."""
    site = Site.objects.select_for_update().filter(pk=site_id).first()
    if site is None:
        raise NotFoundError(f"No site {site_id!r}.")
    return site


def full_representation(values: dict[str, Any]) -> dict[str, Any]:
    """A PUT or create body → every field, defaults for what it left out."""
    full = {"description": "", "address": "", "latitude": None, "longitude": None}
    full.update({CONFIG_FIELDS[wire]: default for wire, default in CONFIG_DEFAULTS.items()})
    full.update(values)
    return full


@transaction.atomic
def site_create(*, actor: Actor, site_id: str, values: dict[str, Any]) -> Site:
    if Site.objects.filter(pk=site_id).exists():
        raise ConflictError("already_exists", f"Site {site_id!r} already exists.")
    try:
        with transaction.atomic():
            site = Site.objects.create(id=site_id, **full_representation(values))
    except IntegrityError as exc:  # a concurrent create of the same id
        raise ConflictError("already_exists", f"Site {site_id!r} already exists.") from exc
    site_schedule_changed(site)
    audit_record(
        actor=actor,
        action="site_created",
        entity_type="site",
        entity_id=site.id,
        site_id=site.id,
        details={"label": site.label, "config": site.config_dict()},
    )
    return site


@transaction.atomic
def site_update(*, actor: Actor, site_id: str, values: dict[str, Any], partial: bool) -> Site:
    """PUT (partial=False: omitted fields go back to their defaults) or PATCH."""
    site = site_get_locked(site_id)
    if not partial:
        values = full_representation(values)
    changed = {
        field: value
        for field, value in values.items()
        if getattr(site, field) != value and hasattr(site, field)
    }
    if not changed:
        return site  # a write that changes nothing moves no version and leaves no trace

    before = {field: getattr(site, field) for field in changed}
    for field, value in changed.items():
        setattr(site, field, value)
    config_changes = [field for field in changed if field in CONFIG_MODEL_FIELDS]
    if config_changes:
        site.config_version += 1
    site.save()
    if changed.keys() & SCHEDULE_FIELDS:
        site_schedule_changed(site)

    audit_record(
        actor=actor,
        action="site_updated",
        entity_type="site",
        entity_id=site.id,
        site_id=site.id,
        details={
            "changes": {
                _WIRE_NAME.get(field, field): {"from": before[field], "to": changed[field]}
                for field in changed
            },
            "configVersion": site.config_version,
        },
    )
    if config_changes:
        names = [_INSTANCE_NAME.get(field, _WIRE_NAME[field]) for field in config_changes]
        publish(
            group=site_group(site.id),
            event_type="config_updated",
            site_id=site.id,
            payload={
                "configVersion": site.config_version,
                "changes": names,
                "config": {name: changed[field] for name, field in zip(names, config_changes, strict=True)},
            },
        )
    return site


@transaction.atomic
def site_delete(*, actor: Actor, site_id: str) -> None:
    site = site_get_locked(site_id)
    label = site.label
    site.delete()  # instances, tokens bound to it, inventory: ON DELETE CASCADE
    site_removed(site_id)  # discovery removes its beat entries: the site's and its seeds'
    end_sessions(
        group=site_group(site_id),
        code=4403,
        error="site_deleted",
        detail=f"Site {site_id} was deleted with its instances.",
    )
    audit_record(
        actor=actor,
        action="site_deleted",
        entity_type="site",
        entity_id=site_id,
        site_id=site_id,
        details={"label": label},
    )


def site_next_event_seq(site_id: str) -> int | None:
    """The next event number of a site, allocated atomically by the database (None: no such site)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE sites SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",
            [site_id],
        )
        row = cursor.fetchone()
    return row[0] if row else None
