"""The spec's HTTP series (ManagerAPIErrors, ManagerAPIHighLatency): counted per method, route pattern and
status, never per raw path."""

from __future__ import annotations

from prometheus_client import REGISTRY

REQUESTS = "promsnmp_manager_http_requests_total"
DURATION_COUNT = "promsnmp_manager_http_request_duration_seconds_count"
HEARTBEAT = "/api/v1/instances/<str:instance_id>/heartbeat"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_route_pattern_and_status(make_site, client_for, register):
    site = make_site("metrics-site")
    api = client_for("instance", site=site)
    first, second = register(site, "host-a"), register(site, "host-b")
    ok_before = sample(REQUESTS, method="POST", endpoint=HEARTBEAT, status="200")
    missing_before = sample(REQUESTS, method="POST", endpoint=HEARTBEAT, status="404")
    timed_before = sample(DURATION_COUNT, method="POST", endpoint=HEARTBEAT)
    unmatched_before = sample(REQUESTS, method="GET", endpoint="unmatched", status="404")

    # two instances, and one path with a trailing slash: one endpoint
    for path in (f"{first}/heartbeat", f"{second}/heartbeat", f"{second}/heartbeat/"):
        response = api.post(f"/api/v1/instances/{path}", {"status": "healthy"}, format="json")
        assert response.status_code == 200, response.content
    assert (
        api.post("/api/v1/instances/inst_nope/heartbeat", {"status": "healthy"}, format="json").status_code
        == 404
    )
    assert api.get("/no/such/path/123").status_code == 404

    assert sample(REQUESTS, method="POST", endpoint=HEARTBEAT, status="200") == ok_before + 3
    assert sample(REQUESTS, method="POST", endpoint=HEARTBEAT, status="404") == missing_before + 1
    assert sample(DURATION_COUNT, method="POST", endpoint=HEARTBEAT) == timed_before + 4
    assert sample(REQUESTS, method="GET", endpoint="unmatched", status="404") == unmatched_before + 1
    endpoints = {
        s.labels["endpoint"]
        for metric in REGISTRY.collect()
        if metric.name == REQUESTS.removesuffix("_total")
        for s in metric.samples
    }
    assert not any(first in endpoint or second in endpoint for endpoint in endpoints), endpoints


def test_the_series_are_on_metrics(client, db):
    client.get("/health/live")
    text = client.get("/metrics").content.decode()
    assert 'promsnmp_manager_http_requests_total{endpoint="/health/live",method="GET",status="200"}' in text
    assert "promsnmp_manager_http_request_duration_seconds_bucket{" in text
