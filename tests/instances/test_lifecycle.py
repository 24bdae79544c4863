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
