"""Every expression core.cron accepts must be one beat can run (beat drops the ones it cannot parse)."""

import pytest
from celery.schedules import crontab

from core.cron import CronError, parse_cron

ACCEPTED = {
    "0 0 2 * * *": "0 2 * * *",
    "30 3 * * 1-5": "30 3 * * 1-5",
    "0 0/15 * * * *": "0,15,30,45 * * * *",
    "0 5/15 * * * *": "5,20,35,50 * * * *",
    "0 0 0 1 JAN/3 *": "0 0 1 1,4,7,10 *",
    "0 0 0 * * SUN/2": "0 0 * * 0,2,4,6",
    "0 0 0 * * */2": "0 0 * * */2",
    "0 0 0 * * 1-7/2": "0 0 * * 0,1,3,5",
    "0 0 0 * * 5-7": "0 0 * * 5-6,0",
    "0 0 0 * * 7": "0 0 * * 0",
    "0 30 9 ? * MON-FRI": "30 9 * * 1-5",
    "*/20 * * * *": "*/20 * * * *",
    "0 0 12 1,15 * ?": "0 12 1,15 * *",
}


@pytest.mark.parametrize(("expression", "five_fields"), ACCEPTED.items())
def test_accepted_expressions_normalise_to_what_beat_parses(expression, five_fields):
    cron = parse_cron(expression)
    assert cron.as_five_fields() == five_fields
    schedule = crontab(
        minute=cron.minute,
        hour=cron.hour,
        day_of_month=cron.day_of_month,
        month_of_year=cron.month_of_year,
        day_of_week=cron.day_of_week,
    )
    assert schedule.minute  # celery expanded the field to a non-empty set


@pytest.mark.parametrize(
    "expression",
    ["5 0 2 * * *", "61 * * * *", "* * *", "0 0 L * ?", "0 0 ? * * *", "0 0 5-1 * *", "0 0/0 * * *", ""],
)
def test_refused_expressions(expression):
    with pytest.raises(CronError):
        parse_cron(expression)
