from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

# Site configuration as the wire names it, with its defaults; one place for both.
CONFIG_DEFAULTS = {
    "timezone": "UTC",
    "minReplicas": 1,
    "discoveryEnabled": True,
    "discoveryCron": "0 0 2 * * *",
    "collectionInterval": 30000,
    "cacheExpiration": 300000,
    "cacheMaxEntries": 10000,
    "requireInstanceTokens": False,
}
# wire name → model field
CONFIG_FIELDS = {
    "timezone": "timezone",
    "minReplicas": "min_replicas",
    "discoveryEnabled": "discovery_enabled",
    "discoveryCron": "discovery_cron",
    "collectionInterval": "collection_interval",
    "cacheExpiration": "cache_expiration",
    "cacheMaxEntries": "cache_max_entries",
    "requireInstanceTokens": "require_instance_tokens",
}


class Site(models.Model):
    id = models.CharField(
        primary_key=True,
        max_length=64,
        validators=[RegexValidator(SITE_ID_PATTERN, "Lowercase letters, digits, '-' and '_'.")],
    )
    label = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    address = models.CharField(max_length=512, blank=True, default="")
    latitude = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(-90), MaxValueValidator(90)]
    )
    longitude = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(-180), MaxValueValidator(180)]
    )

    # Configuration pushed to instances; configVersion moves on every real change.
    timezone = models.CharField(max_length=64, default=CONFIG_DEFAULTS["timezone"])
    min_replicas = models.PositiveIntegerField(default=CONFIG_DEFAULTS["minReplicas"])
    discovery_enabled = models.BooleanField(default=CONFIG_DEFAULTS["discoveryEnabled"])
    discovery_cron = models.CharField(max_length=128, default=CONFIG_DEFAULTS["discoveryCron"])
    collection_interval = models.PositiveIntegerField(default=CONFIG_DEFAULTS["collectionInterval"])
    cache_expiration = models.PositiveIntegerField(default=CONFIG_DEFAULTS["cacheExpiration"])
    cache_max_entries = models.PositiveIntegerField(default=CONFIG_DEFAULTS["cacheMaxEntries"])
    # On: the site's own (enrolment) tokens may only register; everything else needs the instanceToken that
    # register answers. Off (the default): clients that follow the spec to the letter keep working.
    require_instance_tokens = models.BooleanField(default=CONFIG_DEFAULTS["requireInstanceTokens"])
    config_version = models.PositiveIntegerField(default=1)

    # Fencing token: increments on every leadership change (instances/election.py).
    leader_term = models.PositiveBigIntegerField(default=0)
    # Numbers the site's events (`seq`), so an instance can tell it missed one.
    event_seq = models.PositiveBigIntegerField(default=0)

    # Inventory bookkeeping, kept on the site row so that lists and register stay O(1) per site;
    # the inventory and discovery services update them in the transaction that changes the data.
    inventory_version = models.PositiveBigIntegerField(default=1)
    inventory_updated_at = models.DateTimeField(null=True, blank=True)
    device_count = models.PositiveIntegerField(default=0)
    agent_count = models.PositiveIntegerField(default=0)
    seed_count = models.PositiveIntegerField(default=0)
    last_discovery_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "sites"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.label} ({self.id})"

    def config_dict(self) -> dict:
        return {wire: getattr(self, field) for wire, field in CONFIG_FIELDS.items()}
