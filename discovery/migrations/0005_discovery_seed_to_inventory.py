# DiscoverySeed now belongs to inventory (inventory's 0003_discovery_seed): removed from discovery's
# state only; the table discovery_seeds and its rows stay as they are.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("discovery", "0004_run_status_cancelled"),
        ("inventory", "0003_discovery_seed"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="DiscoverySeed")],
            database_operations=[],
        ),
    ]
