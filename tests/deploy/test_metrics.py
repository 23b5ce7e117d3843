"""/metrics: Prometheus text with the expected names; refused to non-allowed clients; JSON request logs."""
from __future__ import annotations

import json
import logging
import re

from tests.deploy.deploy_support import make_app
from web.logs import JsonFormatter
from tests.web.webhelpers import build_world, login

NAMES = ["mc_mark_tasks", "mc_mark_task_leases_expired", "mc_mark_lease_expiry_events_total", "mc_omr_reads",
         "mc_omr_read_leases_expired", "mc_omr_read_retries_total", "mc_marks_total", "mc_marks_per_second",
         "mc_omr_reads_per_second", "mc_omr_cards_per_second", "mc_outbox_head_id", "mc_http_requests_total",
         "mc_ledger_unchained_entries", "mc_ledger_chain_lag_seconds"]


def test_metrics_text_and_names(settings, db):
    world = build_world(db, settings)
    app = make_app(settings, db)
    m1 = login(app, "marker1")
    task = m1.post(f"/api/v1/items/{world.item_id}/claim", json={}).get_json()["task"]
    m1.post("/api/v1/tasks/submit", json={"token": task["token"], "score": "5", "request_id": "r1"})
    r = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 200
    assert r.mimetype == "text/plain" and "version=0.0.4" in r.headers["Content-Type"]
    body = r.get_data(as_text=True)
    for name in NAMES:
        assert f"# TYPE {name} " in body, name
    assert "mc_marks_total 1" in body
    assert f'mc_mark_tasks{{item_id="{world.item_id}",status="open"}}' in body
    assert "mc_marks_per_second 0.0167" in body
    for line in body.splitlines():      # every sample line parses as name{labels} number
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_metrics_refused(settings, db):
    app = make_app(settings, db)
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    # through a proxy every client looks like loopback: refused unless proxies are trusted
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                      headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403


def test_metrics_token(settings, db):
    app = make_app(settings.with_overrides(metrics_token="s3cret-token"), db)
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    r = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"},
                   headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and "mc_marks_total" in r.get_data(as_text=True)


def test_trusted_proxy_uses_client_address(settings, db):
    app = make_app(settings.with_overrides(trusted_proxies=1), db)
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                      headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                      headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


def test_request_log_fields_json(settings, db, caplog):
    build_world(db, settings)
    app = make_app(settings, db)
    actor = login(app, "marker1")
    with caplog.at_level(logging.INFO, logger="web.request"):
        r = actor.client.get("/healthz?password=hunter2", headers={"X-Request-ID": "req-12345678"})
    assert r.headers["X-Request-ID"] == "req-12345678"
    assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["Server-Timing"])
    record = [rec for rec in caplog.records if rec.name == "web.request"][-1]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-12345678" and entry["route"] == "/healthz" and entry["status"] == 200
    assert isinstance(entry["user_id"], int) and entry["duration_ms"] >= 0 and entry["method"] == "GET"
    text = json.dumps(entry)
    assert "hunter2" not in text and "marker1" not in text and "mc_session" not in text


def test_metrics_show_unchained_ledger_entries_and_their_age(db_url):
    """Deferred chaining: entries waiting for a chainer, and how long the oldest has waited."""
    import datetime as dt

    from marking import ledger
    from marking.db import Database
    from web.metrics import collect

    deferred = Database(db_url, ledger_chaining="deferred")
    try:
        at = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
        for n in range(2):
            with deferred.write() as s:
                ledger.append(s, actor_id=1, action="t.e", entity="t", entity_id=n, data={}, at=at)
        body = collect(deferred, now=at + dt.timedelta(seconds=90))
        assert "mc_ledger_unchained_entries 2" in body and "mc_ledger_chain_lag_seconds 90.0" in body
        ledger.chain_pending(deferred)
        body = collect(deferred, now=at + dt.timedelta(seconds=95))
        assert "mc_ledger_unchained_entries 0" in body and "mc_ledger_chain_lag_seconds 0.0" in body
    finally:
        deferred.dispose()


def test_json_logging_builds_no_gunicorn_access_lines():
    """With the JSON log web.logs writes the request line; gunicorn must not build one to drop it."""
    from web.server import Server, gunicorn_options

    def build(log_format):
        server = Server(lambda: None, gunicorn_options("127.0.0.1", 0, 4, log_format))
        return server.cfg.logger_class(server.cfg)

    json_logger = build("json")
    assert json_logger.access_log_enabled is False
    # Returns before touching the request: these arguments would fail any atom lookup.
    json_logger.access(None, None, None, None)
    assert build("text").access_log_enabled is True
