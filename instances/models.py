from django.db import models
from django.db.models import Q


class ReportedStatus(models.TextChoices):
    """What an instance says of its own health (its liveness is derived from heartbeats)."""

    UNKNOWN = "unknown"
    STARTING = "starting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    STOPPING = "stopping"


class Instance(models.Model):
    id = models.CharField(primary_key=True, max_length=64, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="instances")
    hostname = models.CharField(max_length=255)
    pod_name = models.CharField(max_length=255, blank=True, default="")
    version = models.CharField(max_length=32, blank=True, default="")
    capabilities = models.JSONField(default=list, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    # host:port where Prometheus scrapes this instance (its PromSNMP), for service discovery; "" = none.
    scrape_address = models.CharField(max_length=262, blank=True, default="")

    # Leadership: changed only by instances/election.py.
    is_leader = models.BooleanField(default=False, editable=False)
    leader_since = models.DateTimeField(null=True, blank=True, editable=False)

    reported_status = models.CharField(
        max_length=16, choices=ReportedStatus.choices, default=ReportedStatus.UNKNOWN
    )
    # No index: every heartbeat writes it, and without one the write is a HOT update (no index entry to add);
    # the health check and the selectors filter it over a site's instances or over the leaders, not by it.
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    uptime = models.PositiveBigIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    inventory_version = models.PositiveBigIntegerField(null=True, blank=True)
    # The config version the instance reports having, and the last one the manager handed it.
    config_version = models.PositiveIntegerField(null=True, blank=True)
    config_version_sent = models.PositiveIntegerField(null=True, blank=True)
    # The event socket: when it last opened and last closed (closed after opened = no socket now).
    socket_connected_at = models.DateTimeField(null=True, blank=True)
    socket_disconnected_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "instances"
        ordering = ["site_id", "registered_at"]
        constraints = [
            # The database itself refuses a second leader in a site.
            models.UniqueConstraint(fields=["site"], condition=Q(is_leader=True), name="one_leader_per_site"),
            models.UniqueConstraint(fields=["site", "hostname", "pod_name"], name="unique_instance_identity"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.hostname})"
