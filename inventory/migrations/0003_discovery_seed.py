# DiscoverySeed moves from the discovery app to inventory (seeds are part of the inventory document).
# Its table stays discovery_seeds, created by discovery's 0001_initial: this migration only adds the
# model to inventory's state (no database operation); discovery's 0005 removes it from discovery's.

import django.db.models.deletion
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    """Staff permissions (delete_discoveryseed) and admin log entries follow the model: its content type
    is renamed, not replaced. A new database has none yet (post_migrate creates it)."""
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(
        schema_editor.connection.alias
    )
    if not content_types.filter(app_label="inventory", model="discoveryseed").exists():
        content_types.filter(app_label="discovery", model="discoveryseed").update(app_label="inventory")


def restore_content_type(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(
        schema_editor.connection.alias
    )
    if not content_types.filter(app_label="discovery", model="discoveryseed").exists():
        content_types.filter(app_label="inventory", model="discoveryseed").update(app_label="discovery")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("discovery", "0001_initial"),  # creates the table
        ("inventory", "0002_idempotency_keys"),
        ("sites", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="DiscoverySeed",
                    fields=[
                        (
                            "id",
                            models.CharField(
                                editable=False, max_length=64, primary_key=True, serialize=False
                            ),
                        ),
                        ("name", models.CharField(max_length=255)),
                        ("targets", models.JSONField(default=list)),
                        ("snmp_config", models.JSONField(default=dict)),
                        ("credentials", models.TextField(editable=False)),
                        ("credential_keys", models.JSONField(default=list, editable=False)),
                        ("schedule", models.CharField(blank=True, default="", max_length=128)),
                        ("enabled", models.BooleanField(default=True)),
                        ("options", models.JSONField(blank=True, default=dict)),
                        ("last_run", models.DateTimeField(blank=True, null=True)),
                        ("last_run_status", models.CharField(blank=True, default="", max_length=32)),
                        ("devices_found", models.PositiveIntegerField(blank=True, null=True)),
                        ("fingerprint", models.CharField(default="", editable=False, max_length=64)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "site",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="discovery_seeds",
                                to="sites.site",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "discovery_seeds",
                        "ordering": ["site_id", "created_at", "id"],
                        "constraints": [
                            models.UniqueConstraint(fields=("site", "name"), name="unique_seed_name")
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, restore_content_type, elidable=True),
    ]
