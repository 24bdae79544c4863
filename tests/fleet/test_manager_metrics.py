"""The spec's manager metrics on /metrics: leadership, heartbeat and discovery timestamps read from the
database at scrape time by a collector registered once (fleet's AppConfig; core.metrics serves it once
per scrape). The site's label is `site`, as in the spec's fleet metrics."""

from __future__ import annotations

from datetime import timedelta

from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY

from discovery.models import DiscoveryRun
from discovery.runs import runs_expire
from fleet.metrics import ManagerCollector, register_manager_collector
from instances.models import Instance
from instances.services import instance_deregister, instance_heartbeat
from sites.models import Site
from sites.services import site_update
from tests.conftest import TEST_ACTOR

NAMES = {
    "promsnmp_manager_instance_is_leader": ("site", "instance_id"),
    "promsnmp_manager_instance_last_heartbeat_timestamp": ("site", "instance_id"),
    "promsnmp_manager_site_last_discovery_timestamp": ("site",),
    "promsnmp_manager_instance_config_version_lag": ("site", "instance_id"),
    "promsnmp_manager_instance_inventory_version_lag": ("site", "instance_id"),
    "promsnmp_manager_site_last_discovery_timeout_timestamp": ("site",),
}


def scrape(client) -> dict:
    """{family: {label values: value}} for our families, from a real GET /metrics (no token)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        if family.name in NAMES:
            assert family.type == "gauge"
            families[family.name] = {
                tuple(sample.labels[label] for label in NAMES[family.name]): sample.value
                for sample in family.samples
            }
    return families


def test_leaders_heartbeats_and_discovery_are_read_at_scrape_time(client, make_site, register):
    make_site("chicago-pop-01")
    make_site("nyc-dc-01")
    make_site("empty")
    leader = register("chicago-pop-01", "a")
    follower = register("chicago-pop-01", "b")
    nyc = register("nyc-dc-01", "a")
    ran = timezone.now() - timedelta(hours=3)
    Site.objects.filter(pk="nyc-dc-01").update(last_discovery_at=ran)
    beats = dict(Instance.objects.values_list("id", "last_heartbeat"))

    families = scrape(client)
    assert set(families) == set(NAMES)
    assert families["promsnmp_manager_instance_is_leader"] == {
        ("chicago-pop-01", leader): 1,
        ("chicago-pop-01", follower): 0,
        ("nyc-dc-01", nyc): 1,
    }
    assert families["promsnmp_manager_instance_last_heartbeat_timestamp"] == {
        ("chicago-pop-01", leader): beats[leader].timestamp(),
        ("chicago-pop-01", follower): beats[follower].timestamp(),
        ("nyc-dc-01", nyc): beats[nyc].timestamp(),
    }
    # Only sites whose discovery has run: a 0 would make DiscoveryStale fire for every new site.
    assert families["promsnmp_manager_site_last_discovery_timestamp"] == {("nyc-dc-01",): ran.timestamp()}

    # The next scrape sees the change: no process state in between.
    instance_deregister(actor=TEST_ACTOR, instance_id=leader)
    families = scrape(client)
    assert families["promsnmp_manager_instance_is_leader"] == {
        ("chicago-pop-01", follower): 1,
        ("nyc-dc-01", nyc): 1,
    }


def test_an_empty_database_gives_the_families_without_samples(client, db):
    assert scrape(client) == {name: {} for name in NAMES}


def test_registered_once_however_often_ready_runs(client, make_site, register):
    make_site("site")
    instance = register("site", "a")
    first = register_manager_collector()
    apps.get_app_config("fleet").ready()
    apps.get_app_config("fleet").ready()
    assert register_manager_collector() is first
    ours = [c for c in list(REGISTRY._collector_to_names) if isinstance(c, ManagerCollector)]
    assert ours == [first]
    samples = [
        sample
        for family in text_string_to_metric_families(client.get("/metrics").content.decode())
        if family.name == "promsnmp_manager_instance_is_leader"
        for sample in family.samples
    ]
    assert [(s.labels, s.value) for s in samples] == [({"site": "site", "instance_id": instance}, 1)]


def test_registering_does_not_touch_the_database(db):
    with CaptureQueriesContext(connection) as queries:
        described = list(ManagerCollector().describe())
    assert len(queries) == 0
    assert {family.name for family in described} == set(NAMES)


def test_version_lags_say_how_far_each_instance_is_behind_its_site(client, make_site, register):
    make_site("site")
    current, behind, silent = (register("site", host) for host in ("current", "behind", "silent"))
    site_update(actor=TEST_ACTOR, site_id="site", values={"min_replicas": 3}, partial=True)
    site = Site.objects.get(pk="site")
    assert site.config_version == 2
    Site.objects.filter(pk="site").update(inventory_version=7)
    instance_heartbeat(
        actor=TEST_ACTOR, instance_id=current, status="running", inventory_version=7, config_version=2
    )
    instance_heartbeat(
        actor=TEST_ACTOR, instance_id=behind, status="running", inventory_version=4, config_version=1
    )

    families = scrape(client)
    # silent reports nothing: its config lag is against the version it was given at registration (1),
    # its inventory lag is unknown (no sample).
    assert families["promsnmp_manager_instance_config_version_lag"] == {
        ("site", current): 0,
        ("site", behind): 1,
        ("site", silent): 1,
    }
    assert families["promsnmp_manager_instance_inventory_version_lag"] == {
        ("site", current): 0,
        ("site", behind): 3,
    }

    # A heartbeat without configVersion gets the current config in its answer: no longer behind.
    instance_heartbeat(actor=TEST_ACTOR, instance_id=silent, status="running")
    assert scrape(client)["promsnmp_manager_instance_config_version_lag"][("site", silent)] == 0


def test_the_latest_timed_out_run_of_each_site(client, make_site, settings):
    settings.DISCOVERY_PENDING_TIMEOUT_SECONDS = 600
    make_site("site")
    make_site("other")
    now = timezone.now()
    for run_id, created in (("run_old", now - timedelta(hours=5)), ("run_new", now - timedelta(hours=1))):
        DiscoveryRun.objects.create(id=run_id, site_id="site", triggered_by="manual")
        DiscoveryRun.objects.filter(pk=run_id).update(created_at=created)
    DiscoveryRun.objects.create(id="run_young", site_id="other", triggered_by="manual")
    assert scrape(client)["promsnmp_manager_site_last_discovery_timeout_timestamp"] == {}

    first = now - timedelta(hours=2)
    assert runs_expire(now=first) == ["run_old"]
    assert runs_expire(now=now) == ["run_new"]  # the young one is still pending
    assert scrape(client)["promsnmp_manager_site_last_discovery_timeout_timestamp"] == {
        ("site",): now.timestamp()
    }


def test_a_scrape_reads_the_database_in_the_same_number_of_queries_however_big_the_fleet(
    client, make_site, register, settings
):
    settings.DISCOVERY_PENDING_TIMEOUT_SECONDS = 600

    def grow(n: int) -> None:
        for i in range(n):
            site = make_site(f"site-{n}-{i}")
            for host in "ab":
                instance = register(site, host)
                instance_heartbeat(
                    actor=TEST_ACTOR, instance_id=instance, status="running", inventory_version=1
                )
            DiscoveryRun.objects.create(id=f"run-{n}-{i}", site_id=site, triggered_by="manual")
        DiscoveryRun.objects.update(created_at=timezone.now() - timedelta(hours=1))
        runs_expire()

    def collected() -> int:
        with CaptureQueriesContext(connection) as queries:
            families = list(ManagerCollector().collect())
        assert {family.name for family in families} == set(NAMES)
        return len(queries)

    grow(1)
    small = collected()
    grow(5)
    assert collected() == small == 3
