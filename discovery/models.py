from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending"  # waiting for a leader
    DISPATCHED = "dispatched"  # run_discovery sent to the leader
    RUNNING = "running"  # the leader reported progress
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # by an operator (API or admin)


ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING)


class DiscoveryRun(models.Model):
    """One discovery run of some of a site's seeds (inventory.DiscoverySeed ids), from the trigger to the
    leader's report."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="discovery_runs")
    seed_ids = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    # The instance the run is dispatched to now ("" while pending), every instance it ever was (they
    # may still post the results of their scan), and the site's leaderTerm at the last dispatch.
    dispatched_to = models.CharField(max_length=64, blank=True, default="")
    dispatch_history = models.JSONField(default=list, blank=True)
    leader_term = models.PositiveBigIntegerField(null=True, blank=True)
    dispatch_count = models.PositiveIntegerField(default=0)
    targets_estimated = models.PositiveBigIntegerField(default=0)
    targets_scanned = models.PositiveBigIntegerField(default=0)
    devices_found = models.PositiveIntegerField(default=0)
    devices_new = models.PositiveIntegerField(default=0)
    devices_updated = models.PositiveIntegerField(default=0)
    devices_posted = models.PositiveIntegerField(default=0)  # results posted with this runId
    errors = models.PositiveIntegerField(default=0)
    error_detail = models.TextField(blank=True, default="")
    triggered_by = models.CharField(max_length=32)  # manual, scheduled
    requested_by = models.CharField(max_length=255, blank=True, default="")  # str(Actor)
    created_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "discovery_runs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["site", "-created_at"], name="run_site_created"),
            models.Index(fields=["status", "site"], name="run_status_site"),
        ]

    def __str__(self) -> str:
        # No status: the run's admin page follows it live, a heading with the status would go stale.
        return f"{self.id} ({self.site_id})"
