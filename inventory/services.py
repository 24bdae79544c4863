"""Writes to a site's inventory. Every change set: one version, one change-log row, one event."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.db import transaction
from django.utils import timezone

from core.audit import Actor
from core.crypto import encrypt_json
from core.errors import ApiError, InvalidInput, NotFoundError
from core.hooks import Provider
from core.ids import new_id
from instances.election import leads
from inventory import versioning
from inventory.bulk import analyze_after_commit, insert_rows
from inventory.models import Agent, Device
from inventory.parsing import MODES, DeviceInput, parse_device
from inventory.promsnmp import FORMATS, convert_promsnmp, promsnmp_path
from inventory.seeds import SeedInput, SeedPlan, parse_seeds, seeds_plan, seeds_sync

_BATCH = 2000

# An import's progress, for the jobs that run large ones (inventory.jobs): called with (phase, done,
# total) as devices are checked (CHECKING, every PROGRESS_EVERY devices) and as changes are written
# (WRITING, every _BATCH devices), inside the import's transaction.
Progress = Callable[[str, int, int], None]
CHECKING, WRITING = "checking", "writing"
PROGRESS_EVERY = 1000


class ResultsRun(Protocol):
    """The discovery run that posted results belong to, as inventory_add_devices uses it."""

    def may_post(self, instance_id: str) -> bool:
        """Whether this instance may post the run's results, leader or not."""

    def record(self, *, added: int, updated: int, unchanged: int) -> None:
        """Count the posted results on the run."""


# (*, site_id, run_id, seed_id, instance_id) → the run the results belong to (locked; None when seedId
# ties none), or InvalidInput for a runId that is not the site's. Provided by discovery in its ready()
# (inventory never imports discovery); called inside inventory_add_devices' transaction. Without
# discovery no results are tied to a run.
results_run: Provider[..., ResultsRun | None] = Provider("results_run", default=lambda **_: None)


@dataclass
class Plan:
    """What a change set will do, by identity; computed before anything is written."""

    add: list[DeviceInput] = field(default_factory=list)
    update: list[tuple[str, DeviceInput]] = field(default_factory=list)  # (device id, input)
    unchanged: list[tuple[str, DeviceInput]] = field(default_factory=list)
    remove: dict[str, str] = field(default_factory=dict)  # device id → identity

    @property
    def changes_devices(self) -> bool:
        return bool(self.add or self.update or self.remove)


@dataclass
class ImportResult:
    version: int
    changed: bool
    added: list[str]
    updated: list[str]
    unchanged: int
    removed: list[str]
    seeds: dict[str, list[str]] = field(default_factory=dict)
    dry_run: bool = False
    plan: Plan | None = None
    seed_plan: SeedPlan | None = None  # a dry run's, when seeds were given


@dataclass
class DeviceOutcome:
    id: str | None
    sys_name: str | None
    status: str  # added, updated, unchanged, failed
    error: dict[str, list[str]] | None = None


@dataclass
class AddDevicesResult:
    version: int
    outcomes: list[DeviceOutcome]

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)


def parse_devices(
    items: Any, path: str = "devices", progress: Progress | None = None
) -> tuple[list[DeviceInput | None], dict[str, list[str]]]:
    """A list of wire devices → inputs (None where invalid) and all errors by field path."""
    if not isinstance(items, list):
        raise InvalidInput({path: ["Expected a list of devices."]})
    inputs: list[DeviceInput | None] = []
    errors: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    total = len(items)
    for index, item in enumerate(items):
        if progress is not None and index and index % PROGRESS_EVERY == 0:
            progress(CHECKING, index, total)
        device, device_errors = parse_device(item, f"{path}[{index}]")
        if device is not None and device.identity in seen:
            device_errors = {f"{path}[{index}]": [f"Same device as {path}[{seen[device.identity]}]."]}
            device = None
        if device is not None:
            seen[device.identity] = index
        errors.update(device_errors)
        inputs.append(device)
    if progress is not None:
        progress(CHECKING, total, total)
    return inputs, errors


# Above this many incoming devices one scan of the site beats IN-lists of identities.
_SCAN_ABOVE = 5000


def _plan(site_id: str, devices: list[DeviceInput], mode: str) -> Plan:
    rows = Device.objects.filter(site_id=site_id)
    if mode != "replace" and len(devices) <= _SCAN_ABOVE:
        # A discovery result of a few devices must not read a 100,000-device site.
        rows = rows.filter(identity__in=[device.identity for device in devices])
    existing = {
        identity: (device_id, fp)
        for device_id, identity, fp in rows.values_list("id", "identity", "fingerprint")
    }
    plan = Plan()
    incoming = set()
    for device in devices:
        incoming.add(device.identity)
        known = existing.get(device.identity)
        if known is None:
            plan.add.append(device)
        elif known[1] == device.fingerprint or mode == "addOnly":
            plan.unchanged.append((known[0], device))
        else:
            plan.update.append((known[0], device))
    if mode == "replace":
        plan.remove = {
            device_id: identity for identity, (device_id, _) in existing.items() if identity not in incoming
        }
    return plan


# The columns of the rows a change set writes, in the order _device_row and _agent_rows build them.
_DEVICE_FIELDS = (
    "id",
    "site_id",
    "identity",
    "sys_name",
    "sys_descr",
    "sys_contact",
    "sys_location",
    "sys_object_id",
    "interfaces",
    "metadata",
    "discovered_at",
    "last_seen",
    "discovered_by",
    "fingerprint",
    "changed_version",
    "updated_at",
)
_AGENT_FIELDS = (
    "id",
    "device_id",
    "address",
    "port",
    "version",
    "config",
    "credentials",
    "credential_keys",
    "is_primary",
    "created_at",
)


def _device_row(
    device_id: str, site_id: str, device: DeviceInput, version: int, discovered_by: str, now: datetime
) -> tuple:
    return (
        device_id,
        site_id,
        device.identity,
        device.sys_name,
        device.sys_descr,
        device.sys_contact,
        device.sys_location,
        device.sys_object_id,
        device.interfaces,
        device.metadata,
        device.discovered_at or now,
        now,
        discovered_by,
        device.fingerprint,
        version,
        now,
    )


def _agent_rows(
    device_id: str, device: DeviceInput, reuse: dict[tuple[str, str, int], str], now: datetime
) -> list[tuple]:
    return [
        (
            reuse.get((device_id, agent.address, agent.port)) or new_id("agt"),
            device_id,
            agent.address,
            agent.port,
            agent.version,
            agent.config,
            encrypt_json(agent.secrets),
            sorted(agent.secrets),
            agent.is_primary,
            now,
        )
        for agent in device.agents
    ]


def _device_fields(device: DeviceInput) -> dict[str, Any]:
    return {
        "identity": device.identity,
        "sys_name": device.sys_name,
        "sys_descr": device.sys_descr,
        "sys_contact": device.sys_contact,
        "sys_location": device.sys_location,
        "sys_object_id": device.sys_object_id,
        "interfaces": device.interfaces,
        "metadata": device.metadata,
        "fingerprint": device.fingerprint,
    }


@dataclass
class Written:
    """What _write did: the ids, and how the site's device and agent rows changed in number (the
    counters move by these, exactly: every change set holds the site lock)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    devices_delta: int = 0
    agents_delta: int = 0


def _deleted(counts: tuple[int, dict[str, int]], model: type[Agent | Device]) -> int:
    return counts[1].get(model._meta.label, 0)


def _write(
    site_id: str, plan: Plan, version: int, discovered_by: str, progress: Progress | None = None
) -> Written:
    """Apply a plan's adds, updates and removes, _BATCH devices at a time (reporting WRITING progress
    after each). New rows go in by COPY on PostgreSQL when there are many (inventory.bulk)."""
    now = timezone.now()
    total, done = len(plan.add) + len(plan.update) + len(plan.remove), 0
    written = Written()

    def progressed(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(WRITING, done, total)

    for start in range(0, len(plan.add), _BATCH):
        chunk = plan.add[start : start + _BATCH]
        device_rows: list[tuple] = []
        agent_rows: list[tuple] = []
        for device in chunk:
            device_id = new_id("dev")
            written.added.append(device_id)
            device_rows.append(_device_row(device_id, site_id, device, version, discovered_by, now))
            agent_rows.extend(_agent_rows(device_id, device, {}, now))
        insert_rows(Device, _DEVICE_FIELDS, device_rows)
        insert_rows(Agent, _AGENT_FIELDS, agent_rows)
        written.devices_delta += len(device_rows)
        written.agents_delta += len(agent_rows)
        progressed(len(chunk))

    written.updated = [device_id for device_id, _ in plan.update]
    if plan.update:
        fields = [*_device_fields(plan.update[0][1]), "last_seen", "changed_version", "updated_at"]
        if discovered_by:
            fields.append("discovered_by")
    for start in range(0, len(plan.update), _BATCH):
        chunk = plan.update[start : start + _BATCH]
        chunk_ids = [device_id for device_id, _ in chunk]
        reuse = {
            (device_id, address, port): agent_id
            for agent_id, device_id, address, port in Agent.objects.filter(
                device_id__in=chunk_ids
            ).values_list("id", "device_id", "address", "port")
        }
        rows = []
        agent_rows = []
        for device_id, device in chunk:
            row = Device(id=device_id, last_seen=now, changed_version=version, **_device_fields(device))
            if discovered_by:
                row.discovered_by = discovered_by
            row.updated_at = now
            rows.append(row)
            agent_rows.extend(_agent_rows(device_id, device, reuse, now))
        written.agents_delta -= _deleted(Agent.objects.filter(device_id__in=chunk_ids).delete(), Agent)
        if len(rows) == 1:  # one posted device, the common case: bulk_update's CASE costs 5 ms for it
            Device.objects.filter(pk=rows[0].pk).update(**{name: getattr(rows[0], name) for name in fields})
        else:
            Device.objects.bulk_update(rows, fields, batch_size=_BATCH)
        insert_rows(Agent, _AGENT_FIELDS, agent_rows)
        written.agents_delta += len(agent_rows)
        progressed(len(chunk))

    removed = list(plan.remove)
    for start in range(0, len(removed), _BATCH):
        chunk = removed[start : start + _BATCH]
        written.agents_delta -= _deleted(Agent.objects.filter(device_id__in=chunk).delete(), Agent)
        written.devices_delta -= _deleted(Device.objects.filter(id__in=chunk).delete(), Device)
        progressed(len(chunk))
    analyze_after_commit(total)
    return written


def _touch(device_ids: Iterable[str]) -> None:
    """Seen again, unchanged: refresh lastSeen without a new version."""
    ids = list(device_ids)
    now = timezone.now()
    for start in range(0, len(ids), _BATCH):
        Device.objects.filter(id__in=ids[start : start + _BATCH]).update(last_seen=now)


def inventory_document_parse(
    document: dict[str, Any], *, document_format: str = "manager", progress: Progress | None = None
) -> tuple[list[DeviceInput], list[SeedInput] | None]:
    """A whole inventory document, in the manager's form or PromSNMP's ("promsnmp": converted first) →
    (devices, seeds; None when the document has no discoverySeeds: the seeds are left alone).

    Every field is checked before any is refused: InvalidInput names them all, in the document's own
    field paths (PromSNMP's for its form; where the conversion itself failed, its message alone)."""
    promsnmp = document_format == "promsnmp"
    errors: dict[str, list[str]] = {}
    if promsnmp:
        document, errors = convert_promsnmp(document)
    cannot_map = bool(errors)

    def merge(found: dict[str, list[str]]) -> None:
        for path, messages in found.items():
            path = promsnmp_path(path) if promsnmp else path
            if path not in errors:  # a conversion error already says what is wrong there
                errors[path] = list(messages)

    devices: list[DeviceInput] = []
    if not isinstance(document.get("devices"), list):
        merge({"devices": ["Expected a list of devices."]})
    else:
        inputs, device_errors = parse_devices(document["devices"], progress=progress)
        merge(device_errors)
        devices = [device for device in inputs if device is not None]
    seeds = None
    if document.get("discoverySeeds") is not None:
        seeds, seed_errors = parse_seeds(document["discoverySeeds"])
        merge(seed_errors)
    if errors:
        if cannot_map:
            raise InvalidInput(errors, detail="The PromSNMP document cannot be mapped.")
        raise InvalidInput(errors)
    return devices, seeds


def inventory_import_document(
    *,
    actor: Actor,
    site_id: str,
    document: dict[str, Any],
    document_format: str = "manager",
    mode: str = "merge",
    source: str = "import",
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """PUT inventory, import_inventory and import jobs: a whole document (inventory_document_parse),
    imported all or nothing (inventory_import)."""
    if mode not in MODES:
        raise InvalidInput({"mode": [f"One of {', '.join(MODES)}."]})
    if document_format not in FORMATS:
        raise InvalidInput({"format": ["Either manager or promsnmp."]})
    devices, seeds = inventory_document_parse(document, document_format=document_format, progress=progress)
    return inventory_import(
        actor=actor,
        site_id=site_id,
        devices=devices,
        seeds=seeds,
        mode=mode,
        source=source,
        dry_run=dry_run,
        progress=progress,
    )


def inventory_import(
    *,
    actor: Actor,
    site_id: str,
    devices: list[DeviceInput],
    seeds: list[SeedInput] | None = None,
    mode: str = "merge",
    source: str = "import",
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Parsed devices (and seeds) into the site: all or nothing, one new version at most.

    merge: add new, update changed, keep others; replace: also remove devices and seeds not given;
    addOnly: only add new. Seeds follow the same mode when given (None: left alone). `progress` hears
    of the writes, chunk by chunk, all in the one transaction.
    """
    if mode not in MODES:
        raise InvalidInput({"mode": [f"One of {', '.join(MODES)}."]})
    with transaction.atomic():
        change = versioning.change_begin(site_id)
        plan = _plan(site_id, devices, mode)
        if dry_run:
            return ImportResult(
                version=change.site.inventory_version,
                changed=plan.changes_devices,
                added=[d.identity for d in plan.add],
                updated=[d.identity for _, d in plan.update],
                unchanged=len(plan.unchanged),
                removed=list(plan.remove.values()),
                dry_run=True,
                plan=plan,
                seed_plan=None if seeds is None else seeds_plan(site_id=site_id, seeds=seeds, mode=mode),
            )
        written = _write(site_id, plan, change.new_version, discovered_by="", progress=progress)
        added, updated = written.added, written.updated
        seed_changes = {"added": [], "updated": [], "removed": []}
        if seeds is not None:
            seed_changes = seeds_sync(change=change, seeds=seeds, mode=mode)
        removed = list(plan.remove)
        if not (added or updated or removed or any(seed_changes.values())):
            return ImportResult(
                version=change.site.inventory_version,
                changed=False,
                added=[],
                updated=[],
                unchanged=len(plan.unchanged),
                removed=[],
                seeds=seed_changes,
            )
        version = versioning.change_commit(
            change,
            actor=actor,
            change_type=versioning.FULL_SYNC if mode == "replace" else versioning.BULK_IMPORT,
            added=added,
            updated=updated,
            removed=removed,
            source=source,
            triggered_by=str(actor),
            devices_delta=written.devices_delta,
            agents_delta=written.agents_delta,
            details={"mode": mode, "seeds": {k: len(v) for k, v in seed_changes.items()}},
        )
    return ImportResult(
        version=version,
        changed=True,
        added=added,
        updated=updated,
        unchanged=len(plan.unchanged),
        removed=removed,
        seeds=seed_changes,
    )


def inventory_add_devices(
    *,
    actor: Actor,
    site_id: str,
    items: Any,
    source: str,
    instance_id: str = "",
    require_leader: bool = False,
    run_id: str = "",
    seed_id: str = "",
    add_only: bool = False,
) -> AddDevicesResult:
    """POST …/inventory/devices (discovery results): upsert each valid device, report each bad one.
    `add_only` (devices a bridge's PromSNMP found, in its form): a device the site has is left as it
    is and counted unchanged, since PromSNMP's form lacks fields the manager keeps (sysObjectId, …).

    Unchanged devices get lastSeen refreshed and cause no new version. With require_leader (an
    instance posting discovery results) only the site's current leader may post: 409 not_leader;
    or, with a runId, an instance the run was dispatched to, leader or no longer. The run named by
    runId (or found by seedId; results_run) counts the results.
    """
    inputs, errors = parse_devices(items)
    with transaction.atomic():
        change = versioning.change_begin(site_id)  # the site lock also holds leadership still
        run = None
        if run_id or seed_id:
            run = results_run(
                site_id=site_id,
                run_id=run_id,
                seed_id=seed_id,
                instance_id=instance_id if require_leader else "",
            )
        if (
            require_leader
            and not (run is not None and run.may_post(instance_id))
            and not leads(instance_id, site_id)
        ):
            raise NotLeader(
                f"Instance {instance_id or '(none given)'!r} is not the leader of site {site_id!r}"
                + (f" and run {run_id!r} was never dispatched to it." if run_id else ".")
            )
        valid = [device for device in inputs if device is not None]
        plan = _plan(site_id, valid, "addOnly" if add_only else "merge")
        written = _write(site_id, plan, change.new_version, discovered_by=instance_id)
        added, updated = written.added, written.updated
        _touch(device_id for device_id, _ in plan.unchanged)
        if run is not None:
            run.record(added=len(added), updated=len(updated), unchanged=len(plan.unchanged))
        version = change.site.inventory_version
        if added or updated:
            version = versioning.change_commit(
                change,
                actor=actor,
                change_type=versioning.change_type_for(added, updated, []),
                added=added,
                updated=updated,
                removed=[],
                source=source,
                triggered_by=instance_id or str(actor),
                devices_delta=written.devices_delta,
                agents_delta=written.agents_delta,
            )
    ids = {device.identity: device_id for device_id, device in zip(added, plan.add, strict=True)}
    statuses = {device.identity: "added" for device in plan.add}
    for device_id, device in plan.update:
        ids[device.identity], statuses[device.identity] = device_id, "updated"
    for device_id, device in plan.unchanged:
        ids[device.identity], statuses[device.identity] = device_id, "unchanged"
    outcomes = []
    for index, (item, device) in enumerate(zip(items, inputs, strict=True)):
        if device is None:
            prefix = f"devices[{index}]"
            own = {
                key: value for key, value in errors.items() if key == prefix or key.startswith(prefix + ".")
            }
            name = (
                item.get("sysName")
                if isinstance(item, dict) and isinstance(item.get("sysName"), str)
                else None
            )
            outcomes.append(DeviceOutcome(id=None, sys_name=name, status="failed", error=own))
        else:
            outcomes.append(
                DeviceOutcome(
                    id=ids[device.identity],
                    sys_name=device.sys_name or None,
                    status=statuses[device.identity],
                )
            )
    return AddDevicesResult(version=version, outcomes=outcomes)


def device_delete(*, actor: Actor, site_id: str, device_id: str) -> int:
    with transaction.atomic():
        change = versioning.change_begin(site_id)
        if not Device.objects.filter(pk=device_id, site_id=site_id).exists():
            raise NotFoundError(f"No device {device_id!r} in site {site_id!r}.")
        agents = _deleted(Agent.objects.filter(device_id=device_id).delete(), Agent)
        Device.objects.filter(pk=device_id).delete()
        return versioning.change_commit(
            change,
            actor=actor,
            change_type=versioning.DEVICE_REMOVED,
            added=[],
            updated=[],
            removed=[device_id],
            source="api",
            triggered_by=str(actor),
            devices_delta=-1,
            agents_delta=-agents,
        )


class NotLeader(ApiError):
    def __init__(self, detail: str):
        super().__init__(409, "not_leader", detail)
