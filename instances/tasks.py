from celery import shared_task

from instances import election


@shared_task(name="instances.leader_health_check", ignore_result=True)
def leader_health_check() -> int:
    """Replace leaders past the heartbeat timeout (beat entry: instances.schedules)."""
    return len(election.leader_health_check())
