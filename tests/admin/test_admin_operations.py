"""The admin as the place to act (issue 11 §3), driven with django.test.Client on PostgreSQL: forced
election choosing the new leader, revoking a token from its page (an instance's own token from the
instance's), drift in the instance list, the Site admin's filters, site selects and filters that
scale to thousands of sites, the admin's name, the celery-beat models out of the way, what staff
without a permission see, and query counts that do not grow with the rows."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from rest_framework.test import APIClient

import instances.admin
from core.authentication import hash_token
from core.models import ApiToken, AuditLog
from discovery.models import DiscoveryRun
from instances.models import Instance
from instances.selectors import version_lags, with_version_lags
from instances.services import instance_deregister, instance_enroll, instance_heartbeat
from sites.models import Site
from sites.services import site_update
from tests.admin.test_admin import ACTOR, audit_rows, messages_of, page, run_action
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import device

SITES = "/admin/sites/site/"
INSTANCES = "/admin/instances/instance/"
TOKENS = "/admin/core/apitoken/"
AUDIT = "/admin/core/auditlog/"
DEVICES = "/admin/inventory/device/"
SEEDS = "/admin/inventory/discoveryseed/"
CHANGES = "/admin/inventory/inventorychange/"
RUNS = "/admin/discovery/discoveryrun/"
PRODUCT = "PromSNMP Cloud Manager"


@pytest.fixture
def admin(db, django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(db, django_user_model):
    """staff("sites.view_site", …) → a client logged in as a staff user with just those permissions."""

    def make(*permissions: str) -> Client:
        user = django_user_model.objects.create_user(f"staff{len(permissions)}", password="x", is_staff=True)
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        client = Client()
        client.force_login(user)
        return client

    return make


def beat(instance_id: str, **versions) -> None:
    instance_heartbeat(actor=TEST_ACTOR, instance_id=instance_id, status="healthy", **versions)


def stop(instance_id: str) -> None:
    Instance.objects.filter(pk=instance_id).update(last_heartbeat=timezone.now() - timedelta(minutes=10))


def leader_of(site_id: str) -> str:
    return Instance.objects.get(site_id=site_id, is_leader=True).pk


def elect(client: Client, site_ids: list[str], leader: str | None = None):
    """The election page's POST (what its "Elect" button sends)."""
    extra = {"post": "yes"} if leader is None else {"post": "yes", "leader": leader}
    return run_action(client, SITES, "force_election", site_ids, **extra)


# --- force election: choosing the new leader ----------------------------------------------------------


def test_the_election_page_offers_the_sites_live_followers_healthiest_first(admin, make_site, register):
    site_id = make_site("chicago")
    leader = register(site_id, "host-a", pod_name="pod-a")
    older = register(site_id, "host-b", pod_name="pod-b")
    fresher = register(site_id, "host-c")
    gone = register(site_id, "host-d")
    beat(older, config_version=1, inventory_version=1)
    beat(fresher)  # the most recent heartbeat: the healthiest
    stop(gone)

    response = run_action(admin, SITES, "force_election", [site_id])  # no post=yes: the page
    assert response.status_code == 200
    assert response.templates[0].name == "admin/sites/site/force_election.html"
    [row] = response.context["rows"]
    assert row["leader"].pk == leader
    assert [(i.pk, status) for i, status in row["candidates"]] == [(fresher, "healthy"), (older, "healthy")]
    assert row["healthiest"].pk == fresher and row["others"] == 1  # host-d, offline, is not offered
    html = response.content.decode()
    assert re.search(
        r'<input type="radio" name="leader" value="healthiest" id="leader-healthiest" checked>', html
    )
    assert f'value="{older}"' in html and f'value="{gone}"' not in html
    assert f'<span title="{leader}">host-a</span> (healthy)' in html  # the leader by hostname
    assert "1 (site: 1)" in html and "pod-b" in html  # versions and pod of the candidates
    assert Site.objects.get(pk=site_id).leader_term == 1  # the page changes nothing


def test_the_chosen_instance_becomes_the_leader(admin, make_site, register):
    site_id = make_site("chicago")
    first = register(site_id, "host-a")
    chosen = register(site_id, "host-b")
    beat(register(site_id, "host-c"))  # the healthiest, not chosen

    response = elect(admin, [site_id], leader=chosen)
    assert messages_of(response) == [f"{site_id}: leader {first} → {chosen} (leaderTerm 2)."]
    assert leader_of(site_id) == chosen
    row = audit_rows("leader_assigned")[-1]
    assert (row.actor, row.entity_id, row.details["reason"]) == (ACTOR, chosen, "manual_assignment")


def test_a_choice_the_election_refuses_is_an_error_and_changes_nothing(admin, make_site, register):
    site_id = make_site("chicago")
    make_site("denver")
    leader = register(site_id, "host-a")
    offline = register(site_id, "host-b")
    went_away = register(site_id, "host-c")
    elsewhere = register("denver", "host-d")
    stop(offline)
    instance_deregister(actor=TEST_ACTOR, instance_id=went_away)  # after the page was shown
    term = Site.objects.get(pk=site_id).leader_term
    cases = [
        (went_away, f"No instance '{went_away}' in site 'chicago'."),
        (offline, f"Instance '{offline}' is offline."),
        (leader, f"Instance '{leader}' is already the leader."),
        (elsewhere, f"No instance '{elsewhere}' in site 'chicago'."),
        ("x" * 300, "No instance"),
    ]
    for choice, expected in cases:
        [message] = elect(admin, [site_id], leader=choice).context["messages"]
        assert message.level_tag == "error" and expected in str(message), (choice, str(message))
    assert leader_of(site_id) == leader and Site.objects.get(pk=site_id).leader_term == term
    assert not AuditLog.objects.filter(actor=ACTOR).exists()


def test_several_sites_elect_the_healthiest_follower_of_each(admin, make_site, register, monkeypatch):
    for site_id in ("chicago", "denver", "lone"):
        make_site(site_id)
    chicago = [register("chicago", "chi-a"), register("chicago", "chi-b")]
    denver = [register("denver", "den-a"), register("denver", "den-b")]
    register("lone", "lone-a")

    response = run_action(admin, SITES, "force_election", ["chicago", "denver", "lone"])
    rows = {row["site"].pk: row for row in response.context["rows"]}
    assert (rows["chicago"]["healthiest"].pk, rows["lone"]["healthiest"]) == (chicago[1], None)
    assert 'name="leader"' not in response.content.decode()  # a choice only for one site at a time

    [refused] = elect(admin, ["chicago", "denver"], leader=chicago[1]).context["messages"]
    assert refused.level_tag == "error" and "one site at a time" in str(refused)
    assert leader_of("chicago") == chicago[0]

    texts = messages_of(elect(admin, ["chicago", "denver", "lone"]))
    assert texts[:2] == [
        f"chicago: leader {chicago[0]} → {chicago[1]} (leaderTerm 2).",
        f"denver: leader {denver[0]} → {denver[1]} (leaderTerm 2).",
    ]
    assert texts[2] == "lone: Site 'lone' has no live follower to elect."

    monkeypatch.setattr(instances.admin, "MAX_ELECTION_SITES", 2)
    [capped] = run_action(admin, SITES, "force_election", ["chicago", "denver", "lone"]).context["messages"]
    assert capped.level_tag == "error" and "at most 2 sites" in str(capped)


# --- revoking tokens ----------------------------------------------------------------------------------


def test_a_token_is_revoked_from_its_page(admin, make_token):
    plaintext = make_token(["read"])
    token = ApiToken.objects.get(token_hash=hash_token(plaintext))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/sites").status_code == 200
    revoke = page(TOKENS, token.pk, "revoke")

    detail = admin.get(page(TOKENS, token.pk, "change")).content.decode()
    assert f'href="{revoke}" class="revokelink" id="revoke-token">Revoke</a>' in detail
    confirm = admin.get(revoke)
    assert confirm.status_code == 200
    assert "Every request with it is refused (401)" in confirm.content.decode()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None  # the confirmation changes nothing

    response = admin.post(revoke, follow=True)
    assert response.redirect_chain == [(page(TOKENS, token.pk, "change"), 302)]
    assert messages_of(response) == [f"Revoked test read ({token.prefix}…)."]
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert api.get("/api/v1/sites").status_code == 401
    [row] = audit_rows("token_revoked")
    assert (row.actor, row.entity_id) == (ACTOR, token.pk)
    assert 'id="revoke-token"' not in response.content.decode()  # nothing left to revoke

    again = admin.post(revoke, follow=True)
    assert messages_of(again) == ["test read is already revoked."]
    assert len(audit_rows("token_revoked")) == 1
    missing = admin.post(page(TOKENS, "tok_missing", "revoke"), follow=True)
    assert missing.redirect_chain[-1][0] == TOKENS and messages_of(missing) == ["No API token 'tok_missing'."]


def test_an_instances_own_token_is_linked_from_its_page_and_revoked_there(admin, make_site, staff):
    site_id = make_site("chicago")
    enrollment = instance_enroll(actor=TEST_ACTOR, site_id=site_id, hostname="host-a")
    instance_id = enrollment.instance.id
    token = ApiToken.objects.get(instance_id=instance_id)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {enrollment.instance_token}")
    heartbeat = f"/api/v1/instances/{instance_id}/heartbeat"
    assert api.post(heartbeat, {"status": "healthy"}, format="json").status_code == 200

    instance_page = admin.get(page(INSTANCES, instance_id, "change")).content.decode()
    link = page(TOKENS, token.pk, "change")
    assert f'<a class="instance-token" href="{link}">{token.name} ({token.prefix}…)</a>' in instance_page
    assert "?issued_to=instance" in admin.get(TOKENS).content.decode()  # the list tells them apart
    assert [t.pk for t in admin.get(TOKENS, {"issued_to": "instance"}).context["cl"].result_list] == [
        token.pk
    ]
    assert instance_id in admin.get(link).content.decode()  # the token's page names its instance
    assert "register again" in admin.get(page(TOKENS, token.pk, "revoke")).content.decode()

    admin.post(page(TOKENS, token.pk, "revoke"))
    assert api.post(heartbeat, {"status": "healthy"}, format="json").status_code == 401
    assert "revoked</a>" in admin.get(page(INSTANCES, instance_id, "change")).content.decode()

    # Staff who may not see tokens get no link to follow.
    viewer = staff("instances.view_instance")
    assert "instance-token" not in viewer.get(page(INSTANCES, instance_id, "change")).content.decode()


def test_staff_without_the_permission_see_no_action_or_button(make_site, register, make_token, staff):
    site_id = make_site("chicago")
    register(site_id, "host-a")
    register(site_id, "host-b")
    make_token(["read"])
    token = ApiToken.objects.get()
    viewer = staff("sites.view_site", "core.view_apitoken")

    sites = viewer.get(SITES).content.decode()
    assert 'value="force_election"' not in sites
    response = run_action(viewer, SITES, "force_election", [site_id], post="yes")  # forged: refused
    assert response.status_code == 200 and messages_of(response) == []  # no action of theirs: ignored
    assert Site.objects.get(pk=site_id).leader_term == 1

    assert 'value="revoke_tokens"' not in viewer.get(TOKENS).content.decode()
    assert 'id="revoke-token"' not in viewer.get(page(TOKENS, token.pk, "change")).content.decode()
    assert viewer.get(page(TOKENS, token.pk, "revoke")).status_code == 403
    assert viewer.post(page(TOKENS, token.pk, "revoke")).status_code == 403
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None

    operator = staff("sites.view_site", "sites.change_site", "core.view_apitoken", "core.change_apitoken")
    assert 'value="force_election"' in operator.get(SITES).content.decode()
    assert 'id="revoke-token"' in operator.get(page(TOKENS, token.pk, "change")).content.decode()


# --- drift ---------------------------------------------------------------------------------------------


def test_drift_in_sql_is_drift_in_python(make_site, register):
    """with_version_lags (the admin's filter) computes what version_lags (the /metrics gauges) does."""
    site_id = make_site("chicago")
    Site.objects.filter(pk=site_id).update(config_version=3, inventory_version=7)
    cases = [(3, 1, 7), (2, 1, 7), (None, 1, None), (None, 2, 5), (None, None, 8), (4, 1, 9)]
    for n, (config, sent, inventory) in enumerate(cases):
        instance_id = register(site_id, f"host-{n}")
        Instance.objects.filter(pk=instance_id).update(
            config_version=config, config_version_sent=sent, inventory_version=inventory
        )
    rows = with_version_lags(Instance.objects.filter(site_id=site_id)).order_by("hostname")
    for instance, case in zip(rows, cases, strict=True):
        assert (instance.config_lag, instance.inventory_lag) == version_lags(3, 7, *case), case


def test_the_instance_list_flags_and_filters_drift(admin, make_site, register):
    site_id = make_site("chicago")
    site_update(actor=TEST_ACTOR, site_id=site_id, values={"min_replicas": 2}, partial=True)  # config v2
    in_step, config_behind, inventory_behind, offline = (
        register(site_id, host) for host in ("in-step", "config", "inventory", "offline")
    )
    Site.objects.filter(pk=site_id).update(inventory_version=4)
    beat(in_step, config_version=2, inventory_version=4)
    beat(config_behind, config_version=1)  # its inventory version unreported: unknown, not behind
    beat(inventory_behind, config_version=2, inventory_version=1)
    Instance.objects.filter(pk=offline).update(config_version=1)
    stop(offline)

    response = admin.get(INSTANCES)
    model_admin = response.context["cl"].model_admin
    drift = {i.pk: model_admin.drift(i) for i in response.context["cl"].result_list}
    assert drift == {
        in_step: "-",
        config_behind: '<span class="drift">config 1 behind</span>',
        inventory_behind: '<span class="drift">inventory 3 behind</span>',
        offline: "-",  # offline: the liveness alerts', not drift
    }

    def listed(query: str) -> set[str]:
        response = admin.get(f"{INSTANCES}?{query}")
        assert response.status_code == 200, query
        return {i.pk for i in response.context["cl"].result_list}

    assert listed("drift=yes") == {config_behind, inventory_behind}
    assert listed("drift=no") == {in_step, offline}
    assert listed("drift=nonsense") == {in_step, config_behind, inventory_behind, offline}
    assert listed("drift=yes&site__id__exact=chicago") == {config_behind, inventory_behind}
    detail = admin.get(page(INSTANCES, inventory_behind, "change")).content.decode()
    assert '<span class="drift">inventory 3 behind</span>' in detail


# --- the Site admin's filters; site selects and filters for thousands of sites ------------------------


def test_sites_filter_on_their_own_fields_leader_and_drift(admin, make_site, register):
    led, drifting = make_site("led"), make_site("drifting")
    make_site("empty", discovery_enabled=False)
    register(led, "a")
    beat(register(drifting, "b"), config_version=0)

    def listed(query: str) -> list[str]:
        response = admin.get(f"{SITES}?{query}")
        assert response.status_code == 200, query
        return sorted(site.pk for site in response.context["cl"].result_list)

    assert listed("has_leader=yes") == ["drifting", "led"]
    assert listed("has_leader=no") == ["empty"]
    assert listed("drift=yes") == ["drifting"]
    assert listed("drift=no") == ["empty", "led"]
    assert listed("discovery_enabled__exact=0") == ["empty"]
    assert listed("require_instance_tokens__exact=0") == ["drifting", "empty", "led"]
    hour_ago = urlencode({"created_at__gte": (timezone.now() - timedelta(hours=1)).isoformat()})
    assert listed(hour_ago) == ["drifting", "empty", "led"]


def test_site_selects_use_autocomplete(admin, make_site):
    for n in range(3):
        make_site(f"chicago-{n}", label=f"Chicago POP {n}")
    make_site("denver")
    form = admin.get(f"{TOKENS}add/").content.decode()
    select = re.search(r'<select name="site"[^>]*>', form).group(0)
    assert 'class="admin-autocomplete' in select and 'data-field-name="site"' in select
    assert "chicago-1" not in form  # no option per site: they come from the autocomplete view

    found = admin.get(
        "/admin/autocomplete/",
        {"app_label": "core", "model_name": "apitoken", "field_name": "site", "term": "pop 1"},
    ).json()
    assert found["results"] == [{"id": "chicago-1", "text": "Chicago POP 1 (chicago-1)"}]

    created = admin.post(f"{TOKENS}add/", {"name": "grafana", "scopes": ["read"], "site": "denver"})
    assert created.status_code == 200 and ApiToken.objects.get(name="grafana").site_id == "denver"
    bad = admin.post(f"{TOKENS}add/", {"name": "grafana", "scopes": ["read"], "site": "nowhere"})
    assert "site" in bad.context["adminform"].form.errors and ApiToken.objects.count() == 1


def _fill(make_site, register, admin_api, sites: list[str]) -> None:
    """In each site: an instance, a device (an inventory change), a seed, a run, a token."""
    for site_id in sites:
        make_site(site_id)
        register(site_id, "host-a")
        response = admin_api.post(
            f"/api/v1/sites/{site_id}/inventory/devices", {"devices": [device("r1")]}, format="json"
        )
        assert response.status_code < 300, response.content
        seed = {
            "name": "Core",
            "targets": ["127.0.0.1"],
            "snmpConfig": {"version": 2, "readCommunity": "public"},
        }
        assert (
            admin_api.post(f"/api/v1/sites/{site_id}/discovery-seeds", seed, format="json").status_code == 201
        )
        DiscoveryRun.objects.create(id=f"run-{site_id}", site_id=site_id, triggered_by="manual")
        ApiToken.objects.create(
            id=f"tok-{site_id}", name=site_id, token_hash=site_id, prefix="p", site_id=site_id
        )


SITE_FILTERED = [
    (INSTANCES, "site__id__exact"),
    (DEVICES, "site__id__exact"),
    (SEEDS, "site__id__exact"),
    (CHANGES, "site__id__exact"),
    (RUNS, "site__id__exact"),
    (TOKENS, "site__id__exact"),
    (AUDIT, "site_id__exact"),
]


def test_lists_filter_by_site_with_one_input_not_a_link_per_site(
    admin, make_site, register, admin_api, staff
):
    sites = [f"site-{n:02d}" for n in range(12)]
    _fill(make_site, register, admin_api, sites)
    for url, parameter in SITE_FILTERED:
        everything = admin.get(url)
        html = everything.content.decode()
        assert html.count(f'name="{parameter}"') == 1, url
        assert f"{parameter}=site-" not in html, url  # no link per site
        assert 'data-autocomplete-url="/admin/autocomplete/?app_label=' in html, url
        filtered = admin.get(url, {parameter: "site-03", "o": "1"})
        assert filtered.status_code == 200, url
        rows = list(filtered.context["cl"].queryset)
        assert rows and {row.site_id for row in rows} == {"site-03"}, url
        form = filtered.content.decode()
        assert f'value="site-03" id="filter-{parameter}"' in form, url
        assert '<input type="hidden" name="o" value="1">' in form, url  # the other parameters kept
        assert (
            admin.get(url, {parameter: "  "}).context["cl"].result_count
            == everything.context["cl"].result_count
        )
        assert admin.get(url, {parameter: "no-such-site"}).context["cl"].result_count == 0, url

    # Without view permission on sites: the input still filters, with no suggestions it could not fetch.
    viewer = staff("instances.view_instance")
    html = viewer.get(INSTANCES, {"site__id__exact": "site-01"}).content.decode()
    assert 'name="site__id__exact"' in html and "data-autocomplete-url" not in html


def test_no_admin_list_filters_by_site_with_a_link_per_site():
    """Thousands of sites: a plain "site" list filter renders a link for each; every admin that filters
    by site takes the one-input filter instead (core.admin.AutocompleteFilter, or SiteIdFilter for a
    plain column)."""
    plain = [
        f"{model._meta.label}: {entry}"
        for model, model_admin in django_admin.site._registry.items()
        for entry in model_admin.list_filter
        if isinstance(entry, str) and entry.split("__")[0] in ("site", "site_id")
    ]
    assert not plain, plain


def test_list_query_counts_do_not_grow_with_the_rows(admin, make_site, register, admin_api):
    """Every list changed here, unfiltered and filtered, in as many queries with 8 sites as with one."""
    pages = [(SITES, {}), (SITES, {"has_leader": "yes", "drift": "no", "discovery_enabled__exact": "1"})]
    pages += [(url, query) for url, parameter in SITE_FILTERED for query in ({}, {parameter: "site-00"})]

    def counts() -> list[int]:
        found = []
        for url, query in pages:
            admin.get(url, query)  # warm up
            with CaptureQueriesContext(connection) as captured:
                response = admin.get(url, query)
            assert response.status_code == 200 and response.context["cl"].result_count >= 1, (url, query)
            found.append(len(captured.captured_queries))
        return found

    _fill(make_site, register, admin_api, ["site-00"])
    one_site = counts()
    _fill(make_site, register, admin_api, [f"site-{n:02d}" for n in range(1, 8)])
    assert counts() == one_site


# --- what the admin says it is; the celery-beat models out of the way ----------------------------------


def test_every_admin_page_says_it_is_the_cloud_manager(admin, client, make_site, register, make_token, db):
    login = client.get("/admin/login/").content.decode()
    assert f"<title>Log in | {PRODUCT}</title>" in login and f'<a href="/admin/">{PRODUCT}</a>' in login
    site_id = make_site("chicago")
    instance_id = register(site_id, "host-a")
    make_token(["read"])
    token = ApiToken.objects.get()
    pages = [
        "/admin/",
        "/admin/fleet/",
        SITES,
        page(SITES, site_id, "change"),
        INSTANCES,
        page(INSTANCES, instance_id, "change"),
        TOKENS,
        page(TOKENS, token.pk, "change"),
        page(TOKENS, token.pk, "revoke"),
        AUDIT,
        "/admin/password_change/",
    ]
    for url in pages:
        html = admin.get(url).content.decode()
        assert f"| {PRODUCT}</title>" in html and f'<a href="/admin/">{PRODUCT}</a>' in html, url
        assert "Django administration" not in html and "Django site admin" not in html, url
        assert "View site" not in html, url  # nothing is served at "/"
    assert "<h1>Fleet administration</h1>" in admin.get("/admin/").content.decode()
    election = run_action(admin, SITES, "force_election", [site_id]).content.decode()
    assert f"Force election | {PRODUCT}</title>" in election


def test_the_celery_beat_models_are_not_in_the_admin(admin):
    for model in (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
        assert not django_admin.site.is_registered(model), model
    index = admin.get("/admin/").content.decode()
    assert "Periodic tasks" not in index and "Crontabs" not in index and "Clocked" not in index
    assert admin.get("/admin/django_celery_beat/periodictask/").status_code == 404
