"""Celery tasks of inventory."""

from celery import shared_task

from inventory import jobs


@shared_task(name=jobs.TASK, ignore_result=True)
def import_job_run(job_id: str) -> None:
    """Run a queued import job (inventory.jobs.import_job_create / import_job_apply queue it)."""
    jobs.import_job_run(job_id=job_id)
