from instances.models import Instance
from tests.openapi import assert_matches_schema


def test_register_two_instances_first_is_leader(make_site, client_for):
    site = make_site("chicago-pop-01")
    api = client_for("instance", site=site)
    body = {"siteId": site, "hostname": "promsnmp-a", "version": "0.0.10", "podName": "pod-a"}
    first = api.post("/api/v1/instances/register", body, format="json")
    assert first.status_code == 200, first.content
    assert_matches_schema(first, "POST", "/api/v1/instances/register")
    second = api.post(
        "/api/v1/instances/register", {**body, "hostname": "promsnmp-b", "podName": "pod-b"}, format="json"
    )
    assert first.json()["isLeader"] is True
    assert second.json()["isLeader"] is False
    assert second.json()["leaderTerm"] == first.json()["leaderTerm"] == 1
    again = api.post("/api/v1/instances/register", body, format="json")
    assert again.json()["instanceId"] == first.json()["instanceId"]
    assert again.json()["isLeader"] is True
    assert set(first.json()) == {
        "instanceId",
        "siteId",
        "isLeader",
        "inventoryVersion",
        "configVersion",
        "config",
        "websocketUrl",
        "leaderTerm",
        "instanceToken",
    }
    assert first.json()["websocketUrl"] == "ws://testserver/api/v1/ws"


def test_register_keeps_the_scrape_address_for_service_discovery(make_site, client_for, admin_api):
    site = make_site("chicago-pop-01")
    api = client_for("instance", site=site)
    body = {"siteId": site, "hostname": "promsnmp-a", "scrapeAddress": "10.1.2.3:8080"}
    registered = api.post("/api/v1/instances/register", body, format="json")
    assert registered.status_code == 200, registered.content
    instance_id = registered.json()["instanceId"]
    shown = admin_api.get(f"/api/v1/instances/{instance_id}")
    assert shown.json()["scrapeAddress"] == "10.1.2.3:8080"
    assert_matches_schema(shown, "GET", "/api/v1/instances/{instanceId}")

    # Re-registering states the instance's details again: an address left out is gone.
    again = api.post("/api/v1/instances/register", {"siteId": site, "hostname": "promsnmp-a"}, format="json")
    assert again.json()["instanceId"] == instance_id
    assert admin_api.get(f"/api/v1/instances/{instance_id}").json()["scrapeAddress"] is None
    for address in ("[2001:db8::5]:9090", "promsnmp-a.monitoring.svc:8080"):
        body["scrapeAddress"] = address
        assert api.post("/api/v1/instances/register", body, format="json").status_code == 200
        assert admin_api.get(f"/api/v1/instances/{instance_id}").json()["scrapeAddress"] == address


def test_register_refuses_a_scrape_address_that_is_not_host_port(make_site, client_for):
    site = make_site("chicago-pop-01")
    api = client_for("instance", site=site)
    for address in (
        "http://10.1.2.3:8080",
        "10.1.2.3",
        "10.1.2.3:0",
        "host:65536",
        "[zz::1]:80",
        "a b:80",
        5,
    ):
        refused = api.post(
            "/api/v1/instances/register",
            {"siteId": site, "hostname": "promsnmp-a", "scrapeAddress": address},
            format="json",
        )
        assert refused.status_code == 400, (address, refused.content)
        assert refused.json()["error"] == "validation_error" and "scrapeAddress" in refused.json()["fields"]
    assert not Instance.objects.filter(site_id=site).exists()  # nothing registered
