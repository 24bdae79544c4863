"""Every read of the API (each GET route of config/urls.py under api/v1, and /metrics) takes the same
number of queries whatever the data, so an N+1 fails here instead of in a benchmark months later
(issue 12, section 4: one query per agent went unseen in GET inventory).

One world is built and grown inside one transaction that is rolled back at the end (module scope: the
data is made once, not once per route): a small one (SMALL of everything), every read counted; then
grown (LARGE sites, instances, devices with a v2c and a v3 agent each, seeds with a run each, removed
devices, and the audit rows all of it leaves), every read counted again. Each read is then one test
that wants the two counts equal and under a bound. The meta-test at the end fails when a GET route is
neither here nor in NO_DATA, so a new read path must come with its count.

The WebSocket replay's count: tests/instances/test_sessions.py, test_replaying_reads_one_query_….
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver

from discovery import runs
from inventory.models import Device, DiscoverySeed
from inventory.services import device_delete
from inventory.versioning import changes_floor
from sites.models import Site
from tests.conftest import TEST_ACTOR, api_client, create_site
from tests.fleet.test_fleet_api import world as fleet_world
from tests.fleet.test_sd import up
from tests.inventory.test_inventory_api import (
    SITE,
    Materialized,
    community_agent,
    device,
    put_inventory,
    seed,
    usm_agent,
)
from tests.inventory.test_promsnmp_format import own_client

SMALL, LARGE = 2, 15
MAX_QUERIES = 12  # a sane bound: token, site, a few lists; today's largest read takes 10


@dataclass(frozen=True)
class Read:
    name: str  # the route's name in config/urls.py
    path: str  # {site}, {device}, {seed}, {run}, {instance}, {since}: from the world
    client: str = "admin"  # or "instance": an instance's own token (format=promsnmp wants one)
    lists: bool = True  # the answer lists the grown data, so it must be longer in the large world

    def __str__(self) -> str:
        return self.path


INV = "/api/v1/sites/{site}/inventory"
READS = [
    Read("sites", "/api/v1/sites"),
    Read("site-detail", "/api/v1/sites/{site}"),  # with its instances
    Read("site-config", "/api/v1/sites/{site}/config", lists=False),
    Read("inventory", INV),
    Read("inventory", INV + "?includeCredentials=true"),
    Read("inventory", INV + "?format=promsnmp", client="instance"),
    Read("inventory-changes", INV + "/changes?since={since}"),
    Read("inventory-changes", INV + "/changes?since={since}&includeCredentials=true"),
    Read("inventory-import-job", INV + "/import-jobs/{job}", lists=False),  # of `size` devices, queued
    Read("inventory-device", INV + "/devices/{device}"),  # its agents grow
    Read("inventory-device", INV + "/devices/{device}?includeCredentials=true"),
    Read("seeds", "/api/v1/sites/{site}/discovery-seeds"),
    Read("seeds", "/api/v1/sites/{site}/discovery-seeds?includeCredentials=true"),
    Read("seed-detail", "/api/v1/sites/{site}/discovery-seeds/{seed}", lists=False),
    Read("seed-detail", "/api/v1/sites/{site}/discovery-seeds/{seed}?includeCredentials=true", lists=False),
    Read("discovery-runs", "/api/v1/sites/{site}/discovery-runs"),
    Read("discovery-run", "/api/v1/sites/{site}/discovery-runs/{run}", lists=False),
    Read("instance-detail", "/api/v1/instances/{instance}", lists=False),
    Read("fleet-health", "/api/v1/fleet/health"),
    Read("fleet-metrics", "/api/v1/fleet/metrics"),
    Read("fleet-metrics", "/api/v1/fleet/metrics?format=prometheus"),
    Read("sd-instances", "/api/v1/sd/instances"),
    Read("sd-devices", "/api/v1/sd/devices?site={site}"),
    Read("audit-log", "/api/v1/audit-log?limit=1000"),
    Read("metrics", "/metrics"),
]
# GET routes that read no table whatever the data (checked by the meta-test below, so the list stays
# honest about why a route has no count).
NO_DATA = {
    "schema": "the OpenAPI document, generated from the code",
    "docs": "the Swagger UI page around it",
}


# --- the world ----------------------------------------------------------------------------------------


def grow(admin, ids: dict[str, str], have: int, size: int) -> None:
    """Everything to `size`: fleet sites (a healthy, a degraded and an offline instance and a device
    each), and in SITE: instances with scrape addresses, devices with two agents (v2c and v3: secrets
    in both), one of them (the one read alone) with `size` more, seeds with a run each, and one more
    removed device. `ids` gets the ids the paths name."""
    fleet_world(create_site, up, size, first=have)
    for n in range(have, size):
        ids.setdefault("instance", up(SITE, f"host-{n:03d}", f"10.9.0.{n + 1}:8080"))  # the first: leader
    devices = [
        device(f"dev-{n:03d}", agents=[community_agent(f"127.0.2.{n + 1}"), usm_agent(f"127.0.3.{n + 1}")])
        for n in range(size)
    ]
    devices[0]["agents"] += [community_agent(f"127.0.5.{n + 1}") for n in range(size)]
    seeds = [seed(f"seed-{n:03d}", community=f"seedcomm-{n:03d}") for n in range(size)]
    put_inventory(admin, [*devices, device(f"gone-{size}", "127.0.4.1")], discoverySeeds=seeds)
    gone = Device.objects.get(site_id=SITE, sys_name=f"gone-{size}")
    device_delete(actor=TEST_ACTOR, site_id=SITE, device_id=gone.pk)  # removedDeviceIds grow too
    for new_seed in DiscoverySeed.objects.filter(site_id=SITE).order_by("created_at", "id")[have:]:
        run = runs.run_start(actor=TEST_ACTOR, site_id=SITE, seed_ids=[new_seed.pk], triggered_by=runs.MANUAL)
        ids.setdefault("run", run.pk)
        ids.setdefault("seed", new_seed.pk)
    ids.setdefault("device", Device.objects.get(site_id=SITE, sys_name="dev-000").pk)
    # A job for `size` devices; queued for good (its task is enqueued on a commit that never comes).
    job = admin.put(
        INV.format(site=SITE),
        {"devices": devices, "mode": "merge"},
        format="json",
        HTTP_PREFER="respond-async",
    )
    assert job.status_code == 202, job.content
    ids["job"] = job.json()["id"]
    ids["since"] = str(changes_floor(Site.objects.get(pk=SITE)))  # every change the log holds


@dataclass(frozen=True)
class Measured:
    queries: int
    status: int
    content: bytes


def measure(client, path: str) -> Measured:
    """One GET, its streamed body read inside the count."""
    client.get(path)  # warm: the token's lastUsedAt moves at most once a minute
    with CaptureQueriesContext(connection) as queries:
        body = Materialized(client.get(path))
    return Measured(len(queries), body.status_code, body.content)


@pytest.fixture(scope="module")
def counts(django_db_setup, django_db_blocker) -> dict[Read, tuple[Measured, Measured]]:
    """{read: (measured in the small world, in the large one)}; nothing stays in the database."""
    measured: dict[Read, list[Measured]] = {read: [] for read in READS}
    with django_db_blocker.unblock(), transaction.atomic():
        create_site(SITE)
        admin, ids = api_client("admin"), {"site": SITE}
        clients = {"admin": admin, "instance": own_client(SITE)[0]}
        for have, size in ((0, SMALL), (SMALL, LARGE)):
            grow(admin, ids, have, size)
            for read in READS:
                measured[read].append(measure(clients[read.client], read.path.format(**ids)))
        transaction.set_rollback(True)
    return {read: tuple(both) for read, both in measured.items()}


@pytest.mark.django_db  # so that pytest-django sets the test database up for `counts` too
@pytest.mark.parametrize("read", READS, ids=str)
def test_query_count_does_not_grow_with_the_data(counts, read):
    small, large = counts[read]
    for answer in (small, large):
        assert answer.status == 200, (read, answer.status, answer.content[:500])
    assert small.queries == large.queries, (
        f"{read}: {small.queries} queries with {SMALL} of everything, {large.queries} with {LARGE}"
    )
    assert large.queries <= MAX_QUERIES, (read, large.queries)
    if read.lists:  # the large world was really read
        assert len(large.content) > len(small.content), (read, small.content[:300], large.content[:300])


# --- every GET route is counted -------------------------------------------------------------------------


def get_routes() -> dict[str, str]:
    """{name: route} of every route under api/v1/ (and /metrics) that answers GET."""

    def walk(patterns, prefix: str = ""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern

    found: dict[str, str] = {}
    for route, pattern in walk(get_resolver().url_patterns):
        if not (route.startswith("api/v1/") or route == "metrics"):
            continue
        view_class = getattr(pattern.callback, "view_class", None)  # None: a function view, any method
        if view_class is not None and not hasattr(view_class, "get"):
            continue
        if pattern.name is None:
            # config.urls.v1: the same view again with a trailing slash, after its named twin
            assert route.endswith("/") and route[:-1] in found.values(), (
                f"a GET route without a name: {route}"
            )
            continue
        found[pattern.name] = route
    return found


def test_every_get_route_has_a_query_count():
    routes = get_routes()
    counted = {read.name for read in READS}
    missing = set(routes) - counted - set(NO_DATA)
    assert not missing, f"GET routes without a query-count test here: {sorted(missing)}"
    assert counted | set(NO_DATA) <= set(routes), sorted((counted | set(NO_DATA)) - set(routes))


@pytest.mark.parametrize("name", sorted(NO_DATA))
def test_routes_without_a_count_read_no_table(name, db, client, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert client.get("/" + get_routes()[name]).status_code == 200
