from django.conf import settings
from django.db import migrations


def create_entry(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=settings.DISCOVERY_SWEEP_INTERVAL_SECONDS, period="seconds"
    )
    PeriodicTask.objects.get_or_create(
        name="discovery-runs-sweep",
        defaults={"task": "discovery.runs_sweep", "interval": interval, "enabled": True},
    )


def remove_entry(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name="discovery-runs-sweep").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("discovery", "0002_discovery_runs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_entry, remove_entry)]
