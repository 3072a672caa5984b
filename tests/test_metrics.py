"""/metrics: requests by route and status, latency histograms by route, model inference time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server import metrics


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    """Every sample on /metrics as {(name, sorted labels): value}."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_method_and_status(client, member) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.get("/v1/me", headers=member.headers).status_code == 200
    assert client.get("/v1/me", headers={"X-Api-Key": "fc_wrong"}).status_code == 403
    assert client.delete("/v1/keys/key_nope", headers=member.headers).status_code == 404
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    def delta(**labels: str) -> float:
        name = "forecourt_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(route="/v1/me", method="GET", status="200") == 3
    assert delta(route="/v1/me", method="GET", status="403") == 1
    assert delta(route="/v1/keys/<key_id>", method="DELETE", status="404") == 1  # the rule, not the raw path
    assert delta(route="<unmatched>", method="GET", status="404") == 1
    assert not [k for k in after if k[0] == "forecourt_http_requests_total" and ("route", "/no/such/page") in k[1]]
    assert not [k for k in after if ("route", "/metrics") in k[1]]  # scrapes are not counted


def test_latency_histogram_by_route(client, member) -> None:
    before = scrape(client)
    for _ in range(4):
        client.get("/v1/keys", headers=member.headers)
    after = scrape(client)
    name = "forecourt_http_request_duration_seconds"
    count = value(after, f"{name}_count", route="/v1/keys", method="GET") - \
        value(before, f"{name}_count", route="/v1/keys", method="GET")
    assert count == 4
    total = value(after, f"{name}_sum", route="/v1/keys", method="GET") - \
        value(before, f"{name}_sum", route="/v1/keys", method="GET")
    assert 0 < total < 10
    inf = value(after, f"{name}_bucket", route="/v1/keys", method="GET", le="+Inf")
    assert inf == value(after, f"{name}_count", route="/v1/keys", method="GET")
    small = value(after, f"{name}_bucket", route="/v1/keys", method="GET", le="0.005")
    assert small <= inf  # cumulative buckets


def test_model_inference_time_is_exposed(client) -> None:
    before = scrape(client)
    metrics.observe_inference("isnet-general", 0.3)
    metrics.observe_inference("isnet-general", 1.5)
    metrics.observe_inference("dinov2-small", 0.07)
    after = scrape(client)
    name = "forecourt_model_inference_seconds"

    def delta(suffix: str, **labels: str) -> float:
        return value(after, name + suffix, **labels) - value(before, name + suffix, **labels)

    assert delta("_count", model="isnet-general") == 2
    assert abs(delta("_sum", model="isnet-general") - 1.8) < 1e-9
    assert delta("_bucket", model="isnet-general", le="0.5") == 1
    assert delta("_bucket", model="isnet-general", le="2.0") == 2
    assert delta("_count", model="dinov2-small") == 1
    assert delta("_bucket", model="dinov2-small", le="0.1") == 1
