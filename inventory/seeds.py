"""Discovery seeds: validation (plain Python, so a PUT inventory with many seeds stays cheap) and the
writes. Seeds are part of the inventory document (GET inventory carries discoverySeeds), so every
change to them is an inventory version: one increment, one change-log row, one audit row, one event.

The non-secret SNMP settings are stored as JSON; the secrets encrypted (core.crypto). A keyed
fingerprint of the whole normalised input, secrets included, tells an unchanged seed without
decrypting anything.

Discovery runs the seeds and keeps a beat entry for each seed's own schedule: it learns of every seed
write through `seeds_written` (registered in its ready()), called inside the write's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from core.audit import Actor
from core.cron import CronError, validate_cron
from core.crypto import encrypt_json, fingerprint
from core.errors import ConflictError, InvalidInput
from core.hooks import Hook
from core.ids import new_id
from core.validation import storable, strict_int
from inventory.models import DiscoverySeed
from inventory.parsing import MODES
from inventory.selectors import seed_get
from inventory.versioning import FULL_SYNC, ChangeSet, change_begin, change_commit
from snmp.credentials import parse_snmp_credentials
from snmp.targets import Target, count_addresses, parse_target

MAX_NAME = 255
MAX_SCHEDULE = 128  # DiscoverySeed.schedule
# name: (low, high, default)
OPTIONS: dict[str, tuple[int, int, int]] = {
    "timeout": (100, 60_000, 5000),  # ms, per request
    "retries": (0, 10, 1),
    "maxConcurrent": (1, 1024, 50),
    "port": (1, 65535, 161),
}
DEFAULT_OPTIONS = {name: default for name, (_, _, default) in OPTIONS.items()}
REQUIRED = "This field is required."

# (*, site, seeds, removed_ids): the site's seeds just added or changed, and the ids of those deleted.
# Discovery's schedules subscribe in its ready(); called inside the write's transaction, so what they
# write rolls back with the seeds, and their failure fails the write.
seeds_written: Hook[...] = Hook("seeds_written", raise_errors=True)


@dataclass
class SeedInput:
    name: str
    targets: list[str]  # normalised (snmp.targets)
    snmp_plain: dict[str, Any]  # version, type, securityName, securityLevel, protocols…
    secrets: dict[str, str]  # readCommunity, writeCommunity, authPassphrase, privPassphrase
    schedule: str = ""  # "" = no schedule of its own
    enabled: bool = True
    options: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))

    def document(self) -> dict[str, Any]:
        """Everything stored about the seed from its input, secrets included (for the fingerprint)."""
        return {
            "name": self.name,
            "targets": self.targets,
            "snmpConfig": self.snmp_plain,
            "secrets": self.secrets,
            "schedule": self.schedule,
            "enabled": self.enabled,
            "options": self.options,
        }

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.document())


def parse_targets(value: Any, path: str, errors: dict[str, list[str]]) -> list[Target]:
    """The targets list → parsed targets; errors under `path` ("targets") and `path[i]`."""
    if value is None:
        errors.setdefault(path, []).append(REQUIRED)
        return []
    if not isinstance(value, list):
        errors.setdefault(path, []).append("Expected a list of IP addresses, CIDR networks or ranges.")
        return []
    if not value:
        errors.setdefault(path, []).append("At least one target is required.")
        return []
    limit = settings.MAX_SEED_ADDRESSES
    if len(value) > limit:  # each target is at least one address
        errors.setdefault(path, []).append(f"At most {limit} addresses per seed; {len(value)} targets given.")
        return []
    targets = []
    for index, item in enumerate(value):
        try:
            targets.append(parse_target(item))
        except ValueError as exc:
            errors.setdefault(f"{path}[{index}]", []).append(f"Invalid target: {exc}.")
    if len(targets) == len(value):
        total = count_addresses(targets)
        if total > limit:
            errors.setdefault(path, []).append(
                f"The targets cover {total} addresses; at most {limit} per seed (MAX_SEED_ADDRESSES)."
            )
    return targets


def parse_seed(data: Any, path: str = "") -> tuple[SeedInput | None, dict[str, list[str]]]:
    """One seed as the wire carries it → (input, {}) or (None, {field path: [messages]}).

    Strict types: "5" is not an integer. Unknown fields (id, lastRun, … from a GET) are ignored.
    """
    prefix = f"{path}." if path else ""
    errors: dict[str, list[str]] = {}

    def error(name: str, message: str) -> None:
        errors.setdefault(f"{prefix}{name}", []).append(message)

    if not isinstance(data, dict):
        return None, {path or "non_field_errors": ["Expected an object."]}

    name = data.get("name")
    if name is None:
        error("name", REQUIRED)
    elif not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not storable(name):
        error("name", f"A non-blank string of at most {MAX_NAME} characters.")

    targets = parse_targets(data.get("targets"), f"{prefix}targets", errors)

    snmp_config = data.get("snmpConfig")
    plain: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    if snmp_config is None:
        error("snmpConfig", REQUIRED)
    else:
        parsed = parse_snmp_credentials(snmp_config, f"{prefix}snmpConfig")
        for key, messages in parsed.errors.items():
            errors.setdefault(key, []).extend(messages)
        plain, secrets = parsed.plain, parsed.secrets

    schedule = data.get("schedule")
    if schedule is None:
        schedule = ""
    elif not isinstance(schedule, str):
        error("schedule", 'A cron expression ("0 0 2 * * *"), "" or null for none.')
    elif schedule.strip():
        if len(schedule) > MAX_SCHEDULE:
            error("schedule", f"At most {MAX_SCHEDULE} characters.")
        else:
            try:
                schedule = validate_cron(schedule)
            except CronError as exc:
                error("schedule", f"Invalid cron expression: {exc}.")
    else:
        schedule = ""

    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        error("enabled", "Must be true or false.")

    options = dict(DEFAULT_OPTIONS)
    given = data.get("options")
    if given is not None:
        if not isinstance(given, dict):
            error("options", "Expected an object.")
        else:
            for key, (low, high, _default) in OPTIONS.items():
                if key in given:
                    value = strict_int(given[key], low, high)
                    if value is None:
                        error(f"options.{key}", f"An integer from {low} to {high}.")
                    else:
                        options[key] = value

    if errors:
        return None, errors
    return (
        SeedInput(
            name=name,
            targets=[target.text for target in targets],
            snmp_plain=plain,
            secrets=secrets,
            schedule=schedule,
            enabled=enabled,
            options=options,
        ),
        {},
    )


def parse_seeds(data: Any, path: str = "discoverySeeds") -> tuple[list[SeedInput], dict[str, list[str]]]:
    """A list of seeds (PUT inventory) → inputs, or errors; names must be unique within the list."""
    if not isinstance(data, list):
        return [], {path: ["Expected a list of discovery seeds."]}
    seeds: list[SeedInput] = []
    errors: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        seed, seed_errors = parse_seed(item, f"{path}[{index}]")
        errors.update(seed_errors)
        if seed is None:
            continue
        if seed.name in seen:
            errors.setdefault(f"{path}[{index}].name", []).append(
                f"Seed names are unique within a site; {seed.name!r} is also {path}[{seen[seed.name]}]."
            )
            continue
        seen[seed.name] = index
        seeds.append(seed)
    return (seeds if not errors else []), errors


# --- writes ---------------------------------------------------------------------------------------


def _apply(seed: DiscoverySeed, values: SeedInput) -> None:
    seed.name = values.name
    seed.targets = values.targets
    seed.snmp_config = values.snmp_plain
    seed.credentials = encrypt_json(values.secrets)
    seed.credential_keys = sorted(values.secrets)
    seed.schedule = values.schedule
    seed.enabled = values.enabled
    seed.options = values.options
    seed.fingerprint = values.fingerprint


def _new_seed(site_id: str, values: SeedInput) -> DiscoverySeed:
    seed = DiscoverySeed(id=new_id("seed"), site_id=site_id)
    _apply(seed, values)
    return seed


def _duplicate(name: str, site_id: str) -> ConflictError:
    return ConflictError("already_exists", f"Site {site_id!r} already has a discovery seed named {name!r}.")


@dataclass
class SeedPlan:
    """What seeds_sync will do, by name; computed before anything is written (and all a dry run does)."""

    add: list[SeedInput] = field(default_factory=list)
    update: list[tuple[DiscoverySeed, SeedInput]] = field(default_factory=list)  # (row, new values)
    unchanged: int = 0
    remove: list[DiscoverySeed] = field(default_factory=list)


def _plan(existing: dict[str, DiscoverySeed], seeds: list[SeedInput], mode: str) -> SeedPlan:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    names = [seed.name for seed in seeds]
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise InvalidInput({"discoverySeeds": [f"Seed names must be unique; repeated: {duplicates}."]})
    plan = SeedPlan()
    for values in seeds:
        current = existing.get(values.name)
        if current is None:
            plan.add.append(values)
        elif mode != "addOnly" and current.fingerprint != values.fingerprint:
            plan.update.append((current, values))
        else:
            plan.unchanged += 1
    if mode == "replace":
        given = set(names)
        plan.remove = [seed for name, seed in existing.items() if name not in given]
    return plan


def _existing(site_id: str) -> dict[str, DiscoverySeed]:
    return {seed.name: seed for seed in DiscoverySeed.objects.filter(site_id=site_id)}


def seeds_plan(*, site_id: str, seeds: list[SeedInput], mode: str) -> SeedPlan:
    """What seeds_sync would do with these seeds now (a dry run); writes nothing."""
    return _plan(_existing(site_id), seeds, mode)


def seeds_sync(*, change: ChangeSet, seeds: list[SeedInput], mode: str) -> dict[str, list[str]]:
    """Upsert seeds by name in the locked change's site; the caller commits the version.

    merge: add new, update changed, keep the others; replace: also delete the seeds not given;
    addOnly: only add new. Unchanged seeds are not written. → {"added", "updated", "removed"}: ids.
    """
    site = change.site
    existing = _existing(site.pk)
    plan = _plan(existing, seeds, mode)
    added = [_new_seed(site.pk, values) for values in plan.add]
    updated: list[str] = []
    for current, values in plan.update:
        _apply(current, values)
        current.save()
        updated.append(current.id)
    if added:
        DiscoverySeed.objects.bulk_create(added)
    removed = [seed.id for seed in plan.remove]
    if removed:
        DiscoverySeed.objects.filter(site=site, id__in=removed).delete()
    updated_ids = set(updated)
    touched = added + [seed for seed in existing.values() if seed.id in updated_ids]
    seeds_written(site=site, seeds=touched, removed_ids=removed)
    return {"added": [seed.id for seed in added], "updated": updated, "removed": removed}


def _commit(change: ChangeSet, *, actor: Actor, result: dict[str, list[str]], name: str) -> None:
    change_commit(
        change,
        actor=actor,
        change_type=FULL_SYNC,
        added=[],
        updated=[],
        removed=[],
        source="api",
        triggered_by=str(actor),
        details={"seeds": {**result, "name": name}},
    )


@transaction.atomic
def seed_create(*, actor: Actor, site_id: str, seed: SeedInput) -> DiscoverySeed:
    change = change_begin(site_id)  # 404 for an unknown site; serialises the site's seed writes
    if DiscoverySeed.objects.filter(site_id=site_id, name=seed.name).exists():
        raise _duplicate(seed.name, site_id)
    row = _new_seed(site_id, seed)
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError as exc:  # a write that did not take the site lock
        raise _duplicate(seed.name, site_id) from exc
    seeds_written(site=change.site, seeds=[row], removed_ids=[])
    _commit(change, actor=actor, result={"added": [row.id], "updated": [], "removed": []}, name=row.name)
    return row


@transaction.atomic
def seed_update(*, actor: Actor, site_id: str, seed_id: str, seed: SeedInput) -> DiscoverySeed:
    """Full replacement. A PUT that changes nothing writes nothing and moves no version."""
    change = change_begin(site_id)
    row = seed_get(site_id, seed_id)
    if row.fingerprint == seed.fingerprint:
        return row
    if (
        seed.name != row.name
        and DiscoverySeed.objects.filter(site_id=site_id, name=seed.name).exclude(pk=row.pk).exists()
    ):
        raise _duplicate(seed.name, site_id)
    _apply(row, seed)
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError as exc:
        raise _duplicate(seed.name, site_id) from exc
    seeds_written(site=change.site, seeds=[row], removed_ids=[])
    _commit(change, actor=actor, result={"added": [], "updated": [row.id], "removed": []}, name=row.name)
    return row


@transaction.atomic
def seed_delete(*, actor: Actor, site_id: str, seed_id: str) -> None:
    change = change_begin(site_id)
    row = seed_get(site_id, seed_id)
    row.delete()
    seeds_written(site=change.site, seeds=[], removed_ids=[seed_id])
    _commit(change, actor=actor, result={"added": [], "updated": [], "removed": [seed_id]}, name=row.name)


def seeds_record_run(
    *, site_id: str, seed_ids: list[str], last_run: datetime, status: str, devices_found: int | None = None
) -> None:
    """How the seeds' last run went (discovery, when a run ends): lastRun, lastRunStatus and, when the
    run reported its end, devicesFound. Run status, not configuration: no inventory version moves."""
    values: dict[str, Any] = {"last_run": last_run, "last_run_status": status}
    if devices_found is not None:
        values["devices_found"] = devices_found
    DiscoverySeed.objects.filter(site_id=site_id, pk__in=seed_ids).update(**values)
