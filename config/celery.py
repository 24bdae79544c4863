"""The one Celery app, configured from Django settings (namespace CELERY).

Logging: the worker and beat log through Django's LOGGING (LOG_FORMAT, LOG_LEVEL), like the servers. A
receiver of `setup_logging` keeps Celery from configuring logging itself (it would take over the root
logger and write its own text format); Celery's banner, which is printed rather than logged, is left out
by `-q` in the commands we ship (run_prod, the chart) and replaced by one log line when the worker is
ready and when beat starts.

Request ids: a task published while a request (or a task) is being handled carries its id in a message
header; the worker sets it as the current request id while the task runs, so the task's log lines, audit
rows and events carry the id of the request that caused them (core.logging).
"""

import logging
import os
import sys
from contextlib import suppress
from logging.config import dictConfig

import celery.apps.worker
from celery import Celery, signals

from core.logging import JsonFormatter, current_request_id, set_request_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("promsnmp_manager")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger("promsnmp.celery")
REQUEST_ID_HEADER = "promsnmp_request_id"


@signals.celeryd_init.connect  # before the worker's first warning (running as root)
@signals.setup_logging.connect
def use_django_logging(**_):
    from django.conf import settings

    dictConfig(settings.LOGGING)
    logging.captureWarnings(True)  # Python warnings as log lines too
    if settings.LOG_FORMAT == "json":
        # The worker prints its shutdown notices from signal handlers ("worker: Warm shutdown"): JSON too.
        celery.apps.worker.safe_say = say_as_json


def say_as_json(msg, f=sys.__stderr__):
    """celery.apps.worker.safe_say as one JSON log line, written as it writes (os.write: no lock is taken
    in a signal handler)."""
    record = logging.makeLogRecord(
        {"name": "celery.apps.worker", "levelname": "INFO", "levelno": logging.INFO, "msg": msg.strip()}
    )
    with suppress(OSError, ValueError):
        os.write(f.fileno(), (JsonFormatter().format(record) + "\n").encode())


@signals.worker_ready.connect
def worker_ready(sender=None, **_):
    hostname = getattr(sender, "hostname", "")
    queue = app.conf.task_default_queue
    extra = {"hostname": hostname, "queue": queue}
    logger.info("celery worker %s ready, queue %s", hostname, queue, extra=extra)


@signals.beat_init.connect
def beat_started(sender=None, **_):
    queue = app.conf.task_default_queue
    scheduler = str(getattr(sender, "scheduler_cls", ""))
    logger.info("celery beat started (%s), tasks to queue %s", scheduler, queue, extra={"queue": queue})


@signals.before_task_publish.connect
def carry_request_id(headers=None, **_):
    request_id = current_request_id()
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@signals.task_prerun.connect
def restore_request_id(task=None, **_):
    # An eager task runs inside its caller, whose request id is already current: leave it.
    if task is not None and not task.request.is_eager:
        set_request_id(getattr(task.request, REQUEST_ID_HEADER, None))


@signals.task_postrun.connect
def forget_request_id(task=None, **_):
    if task is not None and not task.request.is_eager:
        set_request_id(None)  # the next task in this process starts with its own
