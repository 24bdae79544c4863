from django.db import models


class DiscoverySeed(models.Model):
    """What a site's leader scans: targets (IPs, CIDRs, ranges), SNMP credentials, options, schedule."""

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
        db_table = "discovery_seeds"
        ordering = ["site_id", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="unique_seed_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.site_id})"
