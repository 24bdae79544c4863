"""The fleet dashboard in the admin (/admin/fleet/, fleet/dashboard.py), driven with django.test.Client:
what an operator reads on it (status, summary, alerts, the sites table and its links) for a fleet made
through the services and the API, who may open it, the reload setting, and a query count that does
not grow with the number of sites. Time passes by moving heartbeats back."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from instances.models import Instance
from instances.services import instance_heartbeat
from sites.services import site_update
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import device

DASHBOARD = "/admin/fleet/"
CHICAGO, NYC, EMPTY = "chicago-pop-01", "nyc-dc-01", "0-empty_site"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def instance_url(instance_id: str) -> str:
    return f"/admin/instances/instance/{quote(instance_id)}/change/"  # ids hold "_", which the admin escapes


class _Page(HTMLParser):
    """The text of elements by id, and the rows of tables by id: [(cells' text, links, tr attrs)]."""

    def __init__(self, html: str):
        super().__init__()
        self.texts: dict[str, str] = {}
        self.tables: dict[str, list] = {}
        self._open: list[list] = []  # [id, depth, parts] of elements whose text is being collected
        self._depth = 0
        self._table: str | None = None
        self._row: tuple | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in VOID:
            return
        self._depth += 1
        if attrs.get("id"):
            self._open.append([attrs["id"], self._depth, []])
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = ([], [], attrs)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and self._row is not None:
            self._row[1].append(attrs.get("href"))

    def handle_startendtag(self, tag, attrs):
        pass  # <x/>: nothing inside

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[0].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row[0] and self._row[2].get("class") != "header":
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        while self._open and self._open[-1][1] == self._depth:
            element_id, _, parts = self._open.pop()
            self.texts[element_id] = " ".join("".join(parts).split())
        self._depth -= 1

    def handle_data(self, data):
        for element in self._open:
            element[2].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table_id: str) -> list:
        return [row for row in self.tables[table_id] if row[2]]  # body rows carry attributes


@pytest.fixture
def admin_client(db, django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def up(register):
    """up("site", "host") → instance id: registered, then a heartbeat reporting itself healthy."""

    def make(site_id: str, hostname: str) -> str:
        instance_id = register(site_id, hostname)
        instance_heartbeat(actor=TEST_ACTOR, instance_id=instance_id, status="healthy")
        return instance_id

    return make


@pytest.fixture
def fleet(make_site, up, admin_api):
    """chicago: two live instances, two devices → healthy. nyc: its follower missed its heartbeats →
    degraded (site_degraded and instance_offline alerts). 0-empty_site: no instance → offline
    (site_offline, critical)."""
    make_site(CHICAGO)
    make_site(NYC)
    make_site(EMPTY, discovery_enabled=False)
    chicago = [up(CHICAGO, "chi-a"), up(CHICAGO, "chi-b")]
    nyc = [up(NYC, "nyc-a"), up(NYC, "nyc-b")]
    response = admin_api.post(
        f"/api/v1/sites/{CHICAGO}/inventory/devices",
        {"devices": [device("core-1", "127.0.0.1"), device("core-2", "127.0.0.2")]},
        format="json",
    )
    assert response.status_code < 300, response.content
    Instance.objects.filter(pk=nyc[1]).update(last_heartbeat=timezone.now() - timedelta(minutes=10))
    return {"chicago": chicago, "nyc": nyc}


def test_the_dashboard_shows_status_summary_alerts_and_sites(admin_client, fleet):
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    page = _Page(response.content.decode())

    assert page.texts["fleet-status"] == "degraded"
    assert page.texts["summary-sites"] == "3 sites 1 healthy · 1 degraded · 1 offline"
    assert page.texts["summary-instances"] == "3 / 4 instances healthy"
    assert page.texts["summary-devices"] == "2 devices"
    assert page.texts["summary-agents"] == "2 agents"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page.texts["fleet-updated-at"])

    nyc_leader, nyc_follower = fleet["nyc"]
    alerts = [(cells[:4], links) for cells, links, _ in page.rows("fleet-alerts")]
    assert alerts == [
        (["critical", "site_offline", EMPTY, "–"], ["/admin/sites/site/0-empty_5Fsite/change/"]),
        (["warning", "site_degraded", NYC, "–"], [f"/admin/sites/site/{NYC}/change/"]),
        (
            ["warning", "instance_offline", NYC, nyc_follower],
            [f"/admin/sites/site/{NYC}/change/", instance_url(nyc_follower)],
        ),
    ]
    messages = [cells[4] for cells, _, _ in page.rows("fleet-alerts")]
    assert messages[0] == f"Site {EMPTY} has no registered instance."
    assert messages[2].startswith(f"Instance {nyc_follower} of site {NYC} missed its heartbeats")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \(.+ ago\)", page.rows("fleet-alerts")[2][0][5])

    sites = {
        attrs["data-site"]: (cells, links, attrs["data-status"])
        for cells, links, attrs in page.rows("fleet-sites")
    }
    assert list(sites) == [EMPTY, CHICAGO, NYC]  # by id, as the API orders them
    cells, links, status = sites[CHICAGO]
    chicago_leader = fleet["chicago"][0]
    assert status == "healthy"  # inventory version: 1 for a new site, 2 after the one change set
    # the leader by hostname (its id on hover); no instance drifts (none reported an inventory version)
    assert cells[:9] == [CHICAGO, "healthy", "chi-a", "2 / 2", "–", "2", "2", "2", "never"]
    leader_link = f'href="{instance_url(chicago_leader)}" title="{chicago_leader}">chi-a</a>'
    assert leader_link in response.content.decode()
    assert links == [
        f"/admin/sites/site/{CHICAGO}/change/",
        instance_url(chicago_leader),
        f"/admin/inventory/device/?site__id__exact={CHICAGO}",
        f"/admin/discovery/discoveryrun/?site__id__exact={CHICAGO}",
    ]
    cells, links, status = sites[NYC]
    assert (status, cells[1:4]) == ("degraded", ["degraded", "nyc-a", "1 / 2"])
    assert links[1] == instance_url(nyc_leader)
    cells, links, status = sites[EMPTY]
    assert (status, cells[1:6]) == ("offline", ["offline", "no leader", "0 / 0", "–", "0"])
    assert links[0] == "/admin/sites/site/0-empty_5Fsite/change/"
    assert links[1] == "/admin/inventory/device/?site__id__exact=0-empty_site"


def test_the_links_lead_where_they_say(admin_client, fleet):
    page = _Page(admin_client.get(DASHBOARD).content.decode())
    _, links, _ = next(row for row in page.rows("fleet-sites") if row[2]["data-site"] == EMPTY)
    site_page = admin_client.get(links[0])
    assert site_page.status_code == 200
    assert site_page.context["original"].pk == EMPTY
    devices = admin_client.get(links[1])
    assert devices.status_code == 200
    assert devices.context["cl"].result_count == 0
    _, links, _ = next(row for row in page.rows("fleet-sites") if row[2]["data-site"] == CHICAGO)
    assert admin_client.get(links[1]).context["original"].pk == fleet["chicago"][0]
    assert admin_client.get(links[2]).context["cl"].result_count == 2
    runs = admin_client.get(links[3])  # the runs list, filtered to the site
    assert runs.status_code == 200 and runs.context["cl"].has_active_filters


def test_an_empty_fleet_is_healthy_and_says_so(admin_client):
    page = _Page(admin_client.get(DASHBOARD).content.decode())
    assert page.texts["fleet-status"] == "healthy"
    assert page.texts["fleet-no-alerts"] == "No alerts: every site is healthy."
    assert page.texts["summary-sites"] == "0 sites 0 healthy · 0 degraded · 0 offline"


def test_the_admin_index_links_to_the_dashboard(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    page = _Page(response.content.decode())
    assert page.texts["fleet-dashboard-link"].startswith("Fleet dashboard →")
    assert 'href="/admin/fleet/"' in response.content.decode()
    assert "Sites" in page.texts["content-main"]  # the app list is still there


def test_the_page_reloads_itself_unless_told_not_to(admin_client):
    meta = re.compile(r'<meta http-equiv="refresh" content="(\d+)">')
    assert meta.findall(admin_client.get(DASHBOARD).content.decode()) == ["15"]
    assert meta.findall(admin_client.get(DASHBOARD, {"refresh": "60"}).content.decode()) == ["60"]
    assert meta.findall(admin_client.get(DASHBOARD, {"refresh": "0"}).content.decode()) == []
    assert meta.findall(admin_client.get(DASHBOARD, {"refresh": "soon"}).content.decode()) == ["15"]


def test_anonymous_users_are_sent_to_the_login_page(client, db):
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/fleet/"


def test_only_staff_who_may_view_sites_see_it(db, django_user_model, fleet):
    client = Client()
    user = django_user_model.objects.create_user("operator", password="unused-password")
    client.force_login(user)
    response = client.get(DASHBOARD)  # not staff: the admin's login page
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")

    user.is_staff = True
    user.save()
    assert client.get(DASHBOARD).status_code == 403  # staff, but may not view sites
    assert 'id="fleet-dashboard-link"' not in client.get("/admin/").content.decode()

    user.user_permissions.add(Permission.objects.get(codename="view_site", content_type__app_label="sites"))
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    page = _Page(response.content.decode())
    assert page.texts["fleet-status"] == "degraded"
    _, links, _ = page.rows("fleet-sites")[1]  # chicago: no devices or runs links without their permission
    assert links == [f"/admin/sites/site/{CHICAGO}/change/", instance_url(fleet["chicago"][0])]

    user.user_permissions.add(Permission.objects.get(codename="view_discoveryrun"))
    user = type(user).objects.get(pk=user.pk)  # fresh: permissions are cached
    client.force_login(user)
    _, links, _ = _Page(client.get(DASHBOARD).content.decode()).rows("fleet-sites")[1]
    assert links[2:] == [f"/admin/discovery/discoveryrun/?site__id__exact={CHICAGO}"]
    assert 'id="fleet-dashboard-link"' in client.get("/admin/").content.decode()


def test_instances_behind_their_site_are_flagged_as_drift(admin_client, fleet, up, make_site):
    """The alerts' definition: a live instance behind its site's config (reported, else last sent) or
    inventory (reported) version; an offline one is the liveness alerts', never drift."""
    chi_a, chi_b = fleet["chicago"]
    nyc_a, nyc_b = fleet["nyc"]
    site_update(actor=TEST_ACTOR, site_id=NYC, values={"min_replicas": 2}, partial=True)  # config v2
    instance_heartbeat(actor=TEST_ACTOR, instance_id=chi_b, status="healthy", inventory_version=1)
    instance_heartbeat(actor=TEST_ACTOR, instance_id=nyc_a, status="healthy", config_version=1)
    Instance.objects.filter(pk=nyc_b).update(inventory_version=1)  # behind too, but offline
    instance_heartbeat(actor=TEST_ACTOR, instance_id=chi_a, status="healthy", inventory_version=2)  # current

    response = admin_client.get(DASHBOARD)
    page = _Page(response.content.decode())
    assert page.texts["summary-drift"] == "2 instances drifting"
    drift = [(attrs["data-instance"], cells, links) for cells, links, attrs in page.rows("fleet-drift")]
    assert drift == [
        (
            chi_b,
            [CHICAGO, "chi-b", "healthy", "current", "1 behind (site: 2)"],
            [f"/admin/sites/site/{CHICAGO}/change/", instance_url(chi_b)],
        ),
        (
            nyc_a,
            [NYC, "nyc-a", "healthy", "1 behind (site: 2)", "not reported"],
            [f"/admin/sites/site/{NYC}/change/", instance_url(nyc_a)],
        ),
    ]
    sites = {attrs["data-site"]: cells for cells, _, attrs in page.rows("fleet-sites")}
    assert (sites[CHICAGO][4], sites[NYC][4], sites[EMPTY][4]) == ("1 behind", "1 behind", "–")
    assert f'title="chi-b ({chi_b})">1 behind</span>' in response.content.decode()

    instance_heartbeat(actor=TEST_ACTOR, instance_id=chi_b, status="healthy", inventory_version=2)
    instance_heartbeat(actor=TEST_ACTOR, instance_id=nyc_a, status="healthy", config_version=2)
    page = _Page(admin_client.get(DASHBOARD).content.decode())
    assert page.texts["summary-drift"] == "0 instances drifting"
    assert page.texts["fleet-no-drift"] == "Every live instance has its site's config and inventory."


def _add_sites(make_site, register, admin_api, first: int, last: int) -> None:
    for n in range(first, last):
        site = make_site(f"site-{n:02d}")
        register(site, "host-a")
        behind = register(site, "host-b")
        response = admin_api.post(
            f"/api/v1/sites/{site}/inventory/devices", {"devices": [device(f"r{n}")]}, format="json"
        )
        assert response.status_code < 300, response.content
        instance_heartbeat(actor=TEST_ACTOR, instance_id=behind, status="healthy", inventory_version=1)


def test_the_query_count_does_not_grow_with_the_fleet(
    admin_client, make_site, register, admin_api, django_assert_max_num_queries
):
    _add_sites(make_site, register, admin_api, 0, 1)
    admin_client.get(DASHBOARD)  # warm up
    with CaptureQueriesContext(connection) as captured:
        assert admin_client.get(DASHBOARD).status_code == 200
    # Read now: the next request clears the connection's query log that `captured` indexes into.
    one_site = [query["sql"] for query in captured.captured_queries]
    assert len(one_site) == 4, one_site  # session, user, and fleet_state's two

    _add_sites(make_site, register, admin_api, 1, 20)
    with django_assert_max_num_queries(len(one_site)):
        response = admin_client.get(DASHBOARD)
    page = _Page(response.content.decode())
    assert len(page.rows("fleet-sites")) == 20
    assert len(page.rows("fleet-drift")) == 20  # every host-b is an inventory version behind
