from django.db import models

from snmp.credentials import VERSIONS


class Device(models.Model):
    """A network device of a site. Identity (the upsert key) is its sysName, else its primary address."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="devices")
    identity = models.CharField(max_length=300, editable=False)
    sys_name = models.CharField(max_length=255, blank=True, default="")
    sys_descr = models.TextField(blank=True, default="")
    sys_contact = models.CharField(max_length=255, blank=True, default="")
    sys_location = models.CharField(max_length=255, blank=True, default="")
    sys_object_id = models.CharField(max_length=128, blank=True, default="")
    interfaces = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    discovered_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    discovered_by = models.CharField(max_length=64, blank=True, default="")
    # Keyed hash of the device as last written (agents and secrets included): unchanged → no new version.
    fingerprint = models.CharField(max_length=64, editable=False)
    # The inventory version of the change set that last added or changed this device.
    changed_version = models.PositiveBigIntegerField(editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "devices"
        ordering = ["site_id", "identity"]
        constraints = [models.UniqueConstraint(fields=["site", "identity"], name="unique_device_identity")]
        indexes = [
            models.Index(fields=["site", "changed_version"], name="idx_devices_site_changed"),
            models.Index(fields=["sys_name"], name="idx_devices_sys_name"),
            models.Index(fields=["last_seen"], name="idx_devices_last_seen"),
        ]

    def __str__(self) -> str:
        return self.sys_name or self.identity


class Agent(models.Model):
    """An SNMP endpoint of a device. Secrets are AES-256-GCM ciphertext (core.crypto)."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="agents")
    address = models.GenericIPAddressField()
    port = models.PositiveIntegerField(default=161)
    version = models.PositiveSmallIntegerField(choices=[(v, f"v{v}") for v in VERSIONS])
    # Non-secret settings: type, securityName, securityLevel, protocols, timeout, retries, …
    config = models.JSONField(default=dict)
    credentials = models.TextField(editable=False)  # encrypted JSON of the secrets
    credential_keys = models.JSONField(default=list, editable=False)  # which secrets are set
    is_primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "agents"
        ordering = ["device_id", "-is_primary", "address", "port"]
        constraints = [
            models.UniqueConstraint(fields=["device", "address", "port"], name="unique_agent_endpoint"),
            models.CheckConstraint(condition=models.Q(version__in=VERSIONS), name="agent_version_valid"),
        ]
        indexes = [models.Index(fields=["address"], name="idx_agents_address")]

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


class InventoryChange(models.Model):
    """One change set = one inventory version; the log behind GET …/inventory/changes?since=N."""

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="inventory_changes")
    version = models.PositiveBigIntegerField()
    change_type = models.CharField(max_length=32)
    added_ids = models.JSONField(default=list)
    updated_ids = models.JSONField(default=list)
    removed_ids = models.JSONField(default=list)
    source = models.CharField(max_length=32, blank=True, default="")
    triggered_by = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "inventory_changes"
        ordering = ["site_id", "version"]
        constraints = [models.UniqueConstraint(fields=["site", "version"], name="unique_inventory_version")]

    def __str__(self) -> str:
        return f"{self.site_id} v{self.version} {self.change_type}"


class DiscoverySeed(models.Model):
    """What a site's leader scans: targets (IPs, CIDRs, ranges), SNMP credentials, options, schedule.
    Part of the inventory document; discovery runs them and records how the last run went."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="discovery_seeds")
    name = models.CharField(max_length=255)
    targets = models.JSONField(default=list)
    # Non-secret SNMP settings (version, type, securityName, …); secrets encrypted in `credentials`.
    snmp_config = models.JSONField(default=dict)
    credentials = models.TextField(editable=False)
    credential_keys = models.JSONField(default=list, editable=False)
    schedule = models.CharField(max_length=128, blank=True, default="")
    enabled = models.BooleanField(default=True)
    options = models.JSONField(default=dict, blank=True)
    last_run = models.DateTimeField(null=True, blank=True)
    last_run_status = models.CharField(max_length=32, blank=True, default="")
    devices_found = models.PositiveIntegerField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64, editable=False, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "discovery_seeds"  # the table of the discovery app, where the model lived before
        ordering = ["site_id", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="unique_seed_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.site_id})"


class IdempotencyKey(models.Model):
    """A POST …/inventory/devices answered under an `Idempotency-Key` (inventory/idempotency.py): a repeat
    of that key by the same caller for the same site gets this stored answer, and changes nothing.

    Written in the transaction that applied the request, so a key is never seen half-done: a concurrent
    repeat waits on the site lock, then finds the committed answer (or no row, if the first one failed
    and rolled back). Rows older than IDEMPOTENCY_KEY_TTL_SECONDS (24 h) are pruned on insert."""

    id = models.BigAutoField(primary_key=True)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="+")
    # Who used the key: "instance:<instanceId>" for results naming an instance (its token may change on
    # re-registration), else "token:<tokenId>".
    owner = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)  # sha256 of the canonical JSON body
    status = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["site", "owner", "key"], name="unique_idempotency_key")
        ]
        indexes = [models.Index(fields=["created_at"], name="idx_idempotency_created")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.owner} {self.key}"


class ImportJob(models.Model):
    """An inventory document imported in the background (inventory.jobs, a Celery task): an upload from
    the admin (a dry run first, then the job that applies it) or PUT inventory with `Prefer:
    respond-async`. The import itself is the one all-or-nothing change set PUT inventory makes; the job
    records who asked, how far it got and how it ended."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="import_jobs")
    # core.audit.Actor's fields: the worker imports as the one who asked (the audit row says so).
    actor = models.JSONField(default=dict)
    requested_by = models.CharField(max_length=255)  # str(Actor), for lists
    source = models.CharField(max_length=16)  # admin, api
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    dry_run = models.BooleanField(default=False)
    mode = models.CharField(max_length=16)  # inventory.parsing.MODES
    format = models.CharField(max_length=16)  # inventory.promsnmp.FORMATS
    file_name = models.CharField(max_length=255, blank=True, default="")
    encrypted = models.BooleanField(default=False)  # the file was PromSNMP-encrypted (decrypted on upload)
    size_bytes = models.PositiveBigIntegerField(default=0)
    # The dry run this job applies (admin: "Apply" on a preview).
    preview = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="applies"
    )
    phase = models.CharField(max_length=16, default="queued")  # inventory.jobs.PHASES
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    base_version = models.PositiveBigIntegerField(null=True, blank=True)  # the inventory version planned on
    result = models.JSONField(null=True, blank=True)  # counts, as PUT inventory answers them
    sample = models.JSONField(null=True, blank=True)  # a dry run's first names of each kind
    error = models.JSONField(null=True, blank=True)  # {error, detail, fields}, as an API error body
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()  # moves with the progress: a job that stops moving is lost
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "import_jobs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["site", "-created_at"], name="import_job_site_created"),
            models.Index(fields=["status", "updated_at"], name="import_job_status_updated"),
            models.Index(fields=["created_at"], name="import_job_created"),
        ]

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "import"
        return f"{self.id} ({kind} into {self.site_id}, {self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)


class ImportPayload(models.Model):
    """The document an import job imports, kept only until a job has imported it: zlib-compressed JSON,
    encrypted under FIELD_ENCRYPTION_KEYS (it carries SNMP secrets). Its own table, so that reading a
    job (the progress polls) never loads it."""

    job = models.OneToOneField(ImportJob, on_delete=models.CASCADE, related_name="payload")
    data = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "import_payloads"

    def __str__(self) -> str:
        return f"payload of {self.job_id}"
