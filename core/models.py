from django.db import models


class Scope(models.TextChoices):
    READ = "read", "read: GET only"
    WRITE = "write", "write: GET, POST, PUT, PATCH, DELETE"
    ADMIN = "admin", "admin: everything, credentials included"
    INSTANCE = "instance", "instance: register, heartbeat, own site's inventory"


class ApiToken(models.Model):
    """A bearer token. Only a SHA-256 hash of the plaintext is kept."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    name = models.CharField(max_length=255)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the plaintext, so an operator can tell tokens apart.
    prefix = models.CharField(max_length=16, editable=False)
    scopes = models.JSONField(default=list)
    # A token bound to a site. A foreign key by name, resolved by the app registry (as AUTH_USER_MODEL is):
    # core imports nothing from sites, while the database keeps every binding to an existing site and
    # deletes a site's tokens with it. What core asks of sites at run time goes through core.hooks.
    site = models.ForeignKey(
        "sites.Site", null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens"
    )
    # An instance credential (issued by register): good for that one instance only. Not a foreign key, so
    # core imports no domain app; instances/services.py removes it with the instance.
    instance_id = models.CharField(max_length=64, blank=True, default="", db_index=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "api_tokens"
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditLog(models.Model):
    """Who did what to which entity, from where. Written by services, never edited."""

    id = models.BigAutoField(primary_key=True)
    site_id = models.CharField(max_length=64, blank=True, default="", db_index=False)
    instance_id = models.CharField(max_length=64, blank=True, default="")
    user_id = models.CharField(max_length=150, blank=True, default="")
    token_id = models.CharField(max_length=64, blank=True, default="")
    actor = models.CharField(max_length=255, blank=True, default="")
    action = models.CharField(max_length=64)
    entity_type = models.CharField(max_length=64, blank=True, default="")
    entity_id = models.CharField(max_length=64, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "audit_log"
        ordering = ["-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        indexes = [
            models.Index(fields=["site_id", "-created_at"], name="idx_audit_site_time"),
            models.Index(fields=["entity_type", "entity_id"], name="idx_audit_entity"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.entity_type} {self.entity_id}"


class OutboxMessage(models.Model):
    """A message for the sockets, written in the transaction of the change that caused it and relayed to
    the channel layer after commit (core/events.py), so a crash or a channel-layer outage between commit
    and delivery delays a message but never loses it. Delivered events stay a while with their `seq`, so
    a socket that reconnects with `lastSeq` is sent what it missed."""

    class Kind(models.TextChoices):
        EVENT = "event"  # a spec event: numbered with the site's seq when relayed
        SESSION_END = "session_end"  # closes the sockets of the group (a revoked token, a gone instance)

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.EVENT)
    group = models.CharField(max_length=100)
    site_id = models.CharField(max_length=64, blank=True, default="")
    body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "event_outbox"
        ordering = ["id"]
        indexes = [
            # the relays' queue, and the replay of a site's events after a seq
            models.Index(fields=["id"], condition=models.Q(delivered_at__isnull=True), name="outbox_queued"),
            models.Index(fields=["site_id", "seq"], name="outbox_site_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} → {self.group} ({self.created_at:%H:%M:%S})"
