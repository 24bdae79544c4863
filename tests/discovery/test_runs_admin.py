"""Discovery runs in the admin (issue 11, section 3), driven with django.test.Client on PostgreSQL:
"Run discovery now" on sites (action and the site page's button) and on seeds (one run per site), through
discovery.runs.run_start with the admin user as the actor; a run's page (its fields, the Cancel button,
the progress JSON its script polls); who sees what; bad input; query counts.

The same in a real browser, with the page following a run: tests/admin/test_discovery_runs_browser.py.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.models import AuditLog
from discovery import runs
from discovery.models import DiscoveryRun, RunStatus
from inventory.models import DiscoverySeed
from inventory.seeds import parse_seed, seed_create
from tests.conftest import TEST_ACTOR

CHICAGO, NYC, EMPTY = "chicago-pop-01", "nyc-dc-01", "0-empty_site"
SITES = "/admin/sites/site/"
SEEDS = "/admin/inventory/discoveryseed/"
RUNS = "/admin/discovery/discoveryrun/"
ACTOR = "user:operator"
PASSWORD = "unused-password-1"


def make_seed(site_id: str, name: str, targets: list[str], *, enabled: bool = True) -> str:
    seed, errors = parse_seed(
        {"name": name, "targets": targets, "snmpConfig": {"version": 2, "readCommunity": "c0mmunity"}}
    )
    assert not errors, errors
    row = seed_create(actor=TEST_ACTOR, site_id=site_id, seed=seed)
    if not enabled:
        DiscoverySeed.objects.filter(pk=row.pk).update(enabled=False)
    return row.pk


def staff(django_user_model, *permissions: str, name: str = "operator") -> Client:
    """A logged-in staff user (not a superuser) with just these permissions ("app.codename")."""
    user = django_user_model.objects.create_user(name, password=PASSWORD, is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


VIEW = ("sites.view_site", "inventory.view_discoveryseed", "discovery.view_discoveryrun")
OPERATE = (*VIEW, "discovery.change_discoveryrun")


@pytest.fixture
def operator(django_user_model) -> Client:
    return staff(django_user_model, *OPERATE)


@pytest.fixture
def viewer(django_user_model) -> Client:
    return staff(django_user_model, *VIEW, name="viewer")


@pytest.fixture
def fleet(make_site, register):
    """chicago: a leader and two enabled seeds (a /24 and 8 addresses) and a disabled one; nyc: one
    seed, no instance (its runs wait); empty: no seed at all."""
    for site_id in (CHICAGO, NYC, EMPTY):
        make_site(site_id)
    leader = register(CHICAGO, "chi-a")
    seeds = {
        "core": make_seed(CHICAGO, "Core", ["127.0.0.0/24"]),
        "edge": make_seed(CHICAGO, "Edge", ["127.0.1.1-127.0.1.8"]),
        "off": make_seed(CHICAGO, "Off", ["127.0.2.1"], enabled=False),
        "nyc": make_seed(NYC, "NYC", ["127.0.3.0/30"]),
    }
    return {"leader": leader, "seeds": seeds}


def messages_of(response) -> list[tuple[str, str]]:
    """(level, text) of each message; links stay markup, the rest is read as the page shows it."""
    return [(message.level_tag, unescape(str(message))) for message in response.context["messages"]]


def run_page(run_id: str) -> str:
    return f"{RUNS}{quote(run_id)}/change/"


def link(run_id: str) -> str:
    return f'<a href="{run_page(run_id)}">{run_id}</a>'


def only_run(site_id: str) -> DiscoveryRun:
    [run] = DiscoveryRun.objects.filter(site_id=site_id)
    return run


# --- "Run discovery now" ---------------------------------------------------------------------------------


def test_run_now_on_sites_starts_one_run_per_site_through_the_service(operator, fleet):
    response = operator.post(
        SITES, {"action": "run_discovery_now", "_selected_action": [CHICAGO, NYC, EMPTY]}, follow=True
    )
    assert response.status_code == 200
    chicago, nyc = only_run(CHICAGO), only_run(NYC)
    assert messages_of(response) == [
        ("error", f"Not started on {EMPTY}: Site {EMPTY!r} has no enabled discovery seed."),
        (
            "success",
            f"Discovery run {link(chicago.pk)} on {CHICAGO} (2 seed(s), 264 addresses) "
            f"sent to leader chi-a ({fleet['leader']}).",
        ),
        (
            "warning",
            f"Discovery run {link(nyc.pk)} on {NYC} (1 seed(s), 4 addresses) is pending: the site has no "
            "live leader; it is sent to the next one.",
        ),
    ]
    assert link(chicago.pk) in response.content.decode()  # the link is a link, not escaped text
    assert (chicago.status, chicago.seed_ids, chicago.triggered_by) == (
        RunStatus.DISPATCHED,
        [fleet["seeds"]["core"], fleet["seeds"]["edge"]],  # every enabled seed
        runs.MANUAL,
    )
    assert (nyc.status, chicago.requested_by, nyc.requested_by) == (RunStatus.PENDING, ACTOR, ACTOR)
    rows = AuditLog.objects.filter(action="discovery_run_started").order_by("site_id")
    assert [(r.site_id, r.actor, r.entity_id) for r in rows] == [
        (CHICAGO, ACTOR, chicago.pk),
        (NYC, ACTOR, nyc.pk),
    ]
    assert not DiscoveryRun.objects.filter(site_id=EMPTY).exists()

    # Again: the service refuses (a seed runs once at a time) and the message links to the run it is in.
    response = operator.post(
        SITES, {"action": "run_discovery_now", "_selected_action": [CHICAGO]}, follow=True
    )
    [(level, text)] = messages_of(response)
    assert level == "error" and text.startswith(
        f"Not started on {CHICAGO}: Discovery seed {fleet['seeds']['core']!r} is already"
    )
    assert text.endswith(f'<a href="{run_page(chicago.pk)}">Open {chicago.pk}</a>')
    assert DiscoveryRun.objects.count() == 2


def test_run_now_from_the_site_page_leads_to_the_new_run(operator, fleet):
    button = f"{SITES}{CHICAGO}/run-discovery/"
    page = operator.get(f"{SITES}{CHICAGO}/change/").content.decode()
    assert f'action="{button}"' in page and 'id="run-discovery"' in page
    assert f'href="{RUNS}?site__id__exact={CHICAGO}"' in page  # the site's runs

    response = operator.post(button)
    run = only_run(CHICAGO)
    assert response.status_code == 302 and response["Location"] == run_page(run.pk)
    shown = operator.get(response["Location"])
    assert (
        "success",
        f"Discovery run {link(run.pk)} on {CHICAGO} (2 seed(s), 264 addresses) sent to leader "
        f"chi-a ({fleet['leader']}).",
    ) in messages_of(shown)

    # Refused by the service: back to the site's page, which says why.
    response = operator.post(button, follow=True)
    assert response.redirect_chain == [(f"{SITES}{CHICAGO}/change/", 302)]
    [(level, text)] = messages_of(response)
    assert level == "error" and f"is already in run {run.pk!r}" in text
    response = operator.post(f"{SITES}{EMPTY}/run-discovery/", follow=True)
    assert messages_of(response) == [
        ("error", f"Not started on {EMPTY}: Site {EMPTY!r} has no enabled discovery seed.")
    ]
    response = operator.post(f"{SITES}nowhere/run-discovery/", follow=True)
    assert messages_of(response)[0] == ("error", "Not started on nowhere: No site 'nowhere'.")
    assert operator.get(button).status_code == 405  # a write: POST only
    assert DiscoveryRun.objects.count() == 1


def test_run_now_on_seeds_groups_them_per_site(operator, fleet):
    seeds = fleet["seeds"]
    selected = [seeds["edge"], seeds["nyc"], seeds["core"]]
    response = operator.post(SEEDS, {"action": "run_seeds_now", "_selected_action": selected}, follow=True)
    chicago, nyc = only_run(CHICAGO), only_run(NYC)
    assert sorted(chicago.seed_ids) == sorted([seeds["core"], seeds["edge"]])  # one run for both
    assert nyc.seed_ids == [seeds["nyc"]]
    assert [level for level, _ in messages_of(response)] == ["success", "warning"]
    assert link(chicago.pk) in messages_of(response)[0][1] and link(nyc.pk) in messages_of(response)[1][1]

    runs.run_cancel(actor=TEST_ACTOR, site_id=CHICAGO, run_id=chicago.pk)
    # A disabled seed: the service refuses that site's run, and says which seed.
    response = operator.post(
        SEEDS, {"action": "run_seeds_now", "_selected_action": [seeds["off"], seeds["core"]]}, follow=True
    )
    assert messages_of(response) == [
        ("error", f"Not started on {CHICAGO}: Discovery seed {seeds['off']!r} is disabled; enable it first.")
    ]
    assert DiscoveryRun.objects.count() == 2


def test_run_now_refuses_more_sites_than_one_request_should_start(operator, fleet, monkeypatch):
    monkeypatch.setattr("discovery.admin.MAX_SITES_PER_ACTION", 1)
    for changelist, action, ids, says in (
        (SITES, "run_discovery_now", [CHICAGO, NYC], "Select at most 1 sites (a run each)"),
        (
            SEEDS,
            "run_seeds_now",
            [fleet["seeds"]["core"], fleet["seeds"]["nyc"]],
            "Select seeds of at most 1 sites",
        ),
    ):
        response = operator.post(changelist, {"action": action, "_selected_action": ids}, follow=True)
        [(level, text)] = messages_of(response)
        assert level == "error" and text.startswith(says)
    assert not DiscoveryRun.objects.exists()


# --- who sees what ----------------------------------------------------------------------------------------


def test_staff_without_the_change_permission_on_runs_see_no_way_to_start_or_cancel(
    viewer, operator, fleet, django_user_model
):
    run = runs.run_start(actor=TEST_ACTOR, site_id=CHICAGO, seed_ids=None, triggered_by=runs.MANUAL)
    for changelist, action in ((SITES, "run_discovery_now"), (SEEDS, "run_seeds_now"), (RUNS, "cancel_runs")):
        assert f'value="{action}"' not in viewer.get(changelist).content.decode()
        assert f'value="{action}"' in operator.get(changelist).content.decode()
    site_page = viewer.get(f"{SITES}{CHICAGO}/change/").content.decode()
    assert 'id="run-discovery"' not in site_page and 'id="site-discovery-runs"' in site_page
    run_html = viewer.get(run_page(run.pk)).content.decode()
    assert 'id="run-cancel"' not in run_html and 'id="run-live"' in run_html
    assert 'id="run-cancel"' in operator.get(run_page(run.pk)).content.decode()

    # Posting anyway: refused, nothing started or cancelled.
    assert viewer.post(f"{SITES}{CHICAGO}/run-discovery/").status_code == 403
    assert viewer.post(f"{RUNS}{quote(run.pk)}/cancel/").status_code == 403
    response = viewer.post(SITES, {"action": "run_discovery_now", "_selected_action": [NYC]}, follow=True)
    assert response.status_code == 200 and not DiscoveryRun.objects.filter(site_id=NYC).exists()
    assert DiscoveryRun.objects.get(pk=run.pk).status == RunStatus.DISPATCHED

    # Staff who may not even view runs: no link to them from the site's page either.
    nobody = staff(django_user_model, "sites.view_site", name="site-viewer")
    assert 'id="site-discovery-runs"' not in nobody.get(f"{SITES}{CHICAGO}/change/").content.decode()


# --- a run's page: Cancel -------------------------------------------------------------------------------


def test_cancel_from_the_run_page_goes_through_the_service(operator, fleet):
    run = runs.run_start(actor=TEST_ACTOR, site_id=CHICAGO, seed_ids=None, triggered_by=runs.MANUAL)
    cancel = f"{RUNS}{quote(run.pk)}/cancel/"
    assert f'action="{cancel}"' in operator.get(run_page(run.pk)).content.decode()
    assert operator.get(cancel).status_code == 405

    response = operator.post(cancel, follow=True)
    assert response.redirect_chain == [(run_page(run.pk), 302)]
    assert messages_of(response) == [("success", f"Cancelled {run.pk}.")]
    assert DiscoveryRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    [row] = AuditLog.objects.filter(action="discovery_run_cancelled")
    assert (row.entity_id, row.actor, row.instance_id) == (run.pk, ACTOR, fleet["leader"])
    html = response.content.decode()
    assert 'id="run-cancel"' not in html and f"This run has ended ({RunStatus.CANCELLED})." in html

    # Ended already, or unknown: said, nothing changes.
    response = operator.post(cancel, follow=True)
    assert messages_of(response) == [("warning", f"Not cancelled: {run.pk} had already ended (cancelled).")]
    response = operator.post(f"{RUNS}run_nowhere/cancel/", follow=True)
    assert response.redirect_chain == [(RUNS, 302)]
    assert messages_of(response) == [("error", "No discovery run 'run_nowhere'.")]
    assert AuditLog.objects.filter(action="discovery_run_cancelled").count() == 1


# --- a run's page: the fields and the progress JSON -----------------------------------------------------


def progress_url(run_id: str) -> str:
    return f"{RUNS}{quote(run_id)}/progress/"


def readonly(html: str, name: str) -> str:
    match = re.search(rf'field-{name}\b.*?<div class="readonly">(.*?)</div>', html, re.S)
    assert match, name
    return match.group(1)


def test_the_progress_json_is_the_page_s_fields_as_rendered(operator, fleet):
    run = runs.run_start(actor=TEST_ACTOR, site_id=CHICAGO, seed_ids=None, triggered_by=runs.MANUAL)
    runs.run_progress(instance_id=fleet["leader"], run_id=run.pk, targets_scanned=66, devices_found=3)

    response = operator.get(progress_url(run.pk))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]  # staff data: never cached
    body = response.json()
    state = body["run"]
    assert (state["status"], state["active"], state["percent"]) == ("running", True, 25)
    assert (state["targetsScanned"], state["estimatedTargets"], state["devicesFound"]) == (66, 264, 3)
    assert state["dispatchHistory"] == [fleet["leader"]] and state["dispatchCount"] == 1
    page = operator.get(run_page(run.pk)).content.decode()
    for name, html in body["fields"].items():  # what the script puts in place is what the page shows
        assert readonly(page, name) == html, name
    assert body["fields"]["progress"] == (
        '<progress class="run-progress" max="100" value="25"></progress> 66 / 264 addresses (25 %)'
    )
    assert body["fields"]["dispatched_to_host"] == f'<span title="{fleet["leader"]}">chi-a</span>'
    assert 'data-active="true"' in page and f'data-progress-url="{progress_url(run.pk)}"' in page
    assert 'data-poll-ms="2000"' in page

    runs.run_complete(
        instance_id=fleet["leader"],
        run_id=run.pk,
        status="completed",
        counts={"targetsScanned": 264, "devicesFound": 4, "devicesNew": 3, "devicesUpdated": 1},
        errors=2,
        error_detail="2 addresses <timed out>",
    )
    body = operator.get(progress_url(run.pk)).json()
    assert (body["run"]["status"], body["run"]["active"], body["run"]["percent"]) == ("completed", False, 100)
    fields = body["fields"]
    assert (fields["devices_new"], fields["devices_updated"], fields["errors"]) == ("3", "1", "2")
    assert fields["error_detail"] == "2 addresses &lt;timed out&gt;"  # the instance's text, escaped
    assert 'data-active="false"' in operator.get(run_page(run.pk)).content.decode()


def test_the_progress_json_refuses_clearly(client, viewer, fleet, django_user_model):
    run = runs.run_start(actor=TEST_ACTOR, site_id=NYC, seed_ids=None, triggered_by=runs.MANUAL)
    url = progress_url(run.pk)
    assert viewer.get(url).status_code == 200  # view permission is enough to follow a run

    response = client.get(url)  # not logged in: the admin's login page, as for every admin page
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    no_runs = staff(django_user_model, "sites.view_site", name="site-viewer")
    response = no_runs.get(url)
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    response = viewer.get(progress_url("run_nowhere"))
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": "No discovery run 'run_nowhere'.",
        "fields": {},
    }
    response = viewer.post(url)
    assert (response.status_code, response["Allow"], response.json()["error"]) == (
        405,
        "GET",
        "method_not_allowed",
    )
    assert DiscoveryRun.objects.get(pk=run.pk).status == RunStatus.PENDING


def test_the_progress_json_reads_in_a_fixed_number_of_queries(
    viewer, fleet, register, django_assert_max_num_queries
):
    """The JSON and the run's page, however many runs there are and however many instances the run was
    dispatched to."""
    run = runs.run_start(actor=TEST_ACTOR, site_id=CHICAGO, seed_ids=None, triggered_by=runs.MANUAL)

    def count(url: str) -> int:
        viewer.get(url)  # warm up
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get(url).status_code == 200
        return len(captured.captured_queries)

    queries, page_queries = count(progress_url(run.pk)), count(run_page(run.pk))

    followers = [register(CHICAGO, f"chi-{n}") for n in range(5)]
    history = [fleet["leader"], *followers, "inst_gone"]
    DiscoveryRun.objects.filter(pk=run.pk).update(dispatch_history=history)  # as five redispatches leave it
    for n in range(20):
        seed_id = make_seed(NYC, f"More {n}", [f"127.0.4.{n}"])
        runs.run_start(actor=TEST_ACTOR, site_id=NYC, seed_ids=[seed_id], triggered_by=runs.MANUAL)
    with django_assert_max_num_queries(queries):
        body = viewer.get(progress_url(run.pk)).json()
    with django_assert_max_num_queries(page_queries):
        assert "chi-4" in viewer.get(run_page(run.pk)).content.decode()
    assert body["run"]["dispatchHistory"] == history
    shown = body["fields"]["dispatch_history_hosts"]
    assert shown.startswith(
        f'<span title="{fleet["leader"]}">chi-a</span> → <span title="{followers[0]}">chi-0</span>'
    )
    assert shown.endswith('<span title="inst_gone">inst_gone (deregistered)</span>')


# --- the list ----------------------------------------------------------------------------------------------


def test_the_runs_list_shows_progress_and_filters_by_site_status_and_trigger(
    viewer, fleet, django_assert_max_num_queries
):
    def add_runs(count: int) -> None:
        for n in range(count):
            seed_id = make_seed(NYC, f"Seed {DiscoveryRun.objects.count()}-{n}", ["127.0.5.0/30"])
            run = runs.run_start(
                actor=TEST_ACTOR, site_id=NYC, seed_ids=[seed_id], triggered_by=runs.SCHEDULED
            )
            runs.run_cancel(actor=TEST_ACTOR, site_id=NYC, run_id=run.pk)

    run = runs.run_start(actor=TEST_ACTOR, site_id=CHICAGO, seed_ids=None, triggered_by=runs.MANUAL)
    runs.run_progress(instance_id=fleet["leader"], run_id=run.pk, targets_scanned=132, devices_found=1)
    add_runs(1)
    html = viewer.get(RUNS).content.decode()
    assert (
        '<progress class="run-progress" max="100" value="50"></progress> 132 / 264 addresses (50 %)' in html
    )
    listed = viewer.get(RUNS, {"site__id__exact": CHICAGO}).context["cl"].result_list
    assert [r.pk for r in listed] == [run.pk]
    assert len(viewer.get(RUNS, {"status__exact": "cancelled"}).context["cl"].result_list) == 1
    assert [r.pk for r in viewer.get(RUNS, {"triggered_by__exact": "manual"}).context["cl"].result_list] == [
        run.pk
    ]

    viewer.get(RUNS)  # warm up
    with CaptureQueriesContext(connection) as captured:
        assert viewer.get(RUNS).status_code == 200
    add_runs(15)
    with django_assert_max_num_queries(len(captured.captured_queries)):
        response = viewer.get(RUNS)
    assert response.content.decode().count('class="run-progress"') == 17
