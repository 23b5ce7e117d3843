"""Prometheus ``/metrics`` (text exposition format 0.0.4), computed from the database.

Every web process answers with the same database-wide numbers (queue depths, rates
over the last minute, totals), so scraping any one process — or all of them — works;
``mc_http_requests_total`` is per process (label ``process``). Nothing here names a
candidate or a marker, and no mark is exported.

Access (no auth bypass): with MC_METRICS_TOKEN set, a request must carry
``Authorization: Bearer <token>``; without it, only the addresses in MC_METRICS_ALLOW
(default loopback) may scrape, and a request that came through a proxy (it carries
``X-Forwarded-For``) is refused — behind nginx every client would look like loopback.
deploy/nginx.conf also denies ``/metrics`` from outside.
"""
from __future__ import annotations

import datetime as dt
import hmac
import os
import threading
import time
from collections import Counter

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import func, select

from marking.centre_time import utcnow
from marking.models import LedgerEntry, Mark, MarkTask, OmrRead, OutboxEvent

from .permissions import public

bp = Blueprint("metrics", __name__)
WINDOW_SECONDS = 60
_http_lock = threading.Lock()
_http: Counter = Counter()


def count_request(status: int) -> None:
    """Called once per HTTP response by web.logs (per-process counter)."""
    with _http_lock:
        _http[f"{status // 100}xx"] += 1


def allowed(settings) -> bool:
    token = settings.metrics_token
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())
    if request.headers.get("X-Forwarded-For") and not current_app.config.get("MC_TRUSTED_PROXIES"):
        return False
    return request.remote_addr in settings.metrics_allow


def _esc(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def collect(db, *, now: dt.datetime | None = None) -> str:
    now = now or utcnow()
    since = now - dt.timedelta(seconds=WINDOW_SECONDS)
    started = time.perf_counter()
    out = Exposition()
    with db.read() as s:
        per_item = s.execute(select(MarkTask.item_id, MarkTask.status, func.count())
                             .where(MarkTask.status.in_(("open", "leased")))
                             .group_by(MarkTask.item_id, MarkTask.status)).all()
        expired_tasks = s.execute(select(func.count()).select_from(MarkTask)
                                  .where(MarkTask.status == "leased", MarkTask.leased_until < now)).scalar_one()
        reads = dict(s.execute(select(OmrRead.status, func.count()).group_by(OmrRead.status)).all())
        expired_reads = s.execute(select(func.count()).select_from(OmrRead)
                                  .where(OmrRead.status == "leased", OmrRead.leased_until < now)).scalar_one()
        read_retries = s.execute(select(func.coalesce(func.sum(OmrRead.attempts - 1), 0))
                                 .where(OmrRead.attempts > 1)).scalar_one()
        marks_total = s.execute(select(func.count()).select_from(Mark)).scalar_one()
        marks_recent = s.execute(select(func.count()).select_from(Mark)
                                 .where(Mark.submitted_at >= since)).scalar_one()
        reads_recent = s.execute(select(func.count()).select_from(OmrRead)
                                 .where(OmrRead.status == "done", OmrRead.completed_at >= since)).scalar_one()
        cards_recent = s.execute(select(func.count(func.distinct(OmrRead.card_id)))
                                 .where(OmrRead.status == "done", OmrRead.completed_at >= since)).scalar_one()
        lease_expiry_events = s.execute(select(func.count()).select_from(OutboxEvent)
                                        .where(OutboxEvent.name == "lease.expired")).scalar_one()
        outbox_head = s.execute(select(func.max(OutboxEvent.id))).scalar() or 0
        unchained = s.execute(select(func.count()).select_from(LedgerEntry)).scalar_one()
        oldest_unchained = s.execute(select(func.min(LedgerEntry.at))).scalar()

    out.family("mc_mark_tasks", "gauge", "Marking tasks waiting (open) or held (leased), per item.",
               [({"item_id": item, "status": status}, n) for item, status, n in sorted(per_item)])
    out.family("mc_mark_task_leases_expired", "gauge",
               "Marking leases past their expiry and not yet returned to the pool.", [({}, expired_tasks)])
    out.family("mc_mark_lease_expiry_events_total", "counter",
               "Times expired marking leases were returned to the pool (lease.expired events).",
               [({}, lease_expiry_events)])
    out.family("mc_omr_reads", "gauge", "OMR reads by status (pending = queue depth).",
               [({"status": st}, reads.get(st, 0)) for st in ("pending", "leased", "done", "failed")])
    out.family("mc_omr_read_leases_expired", "gauge",
               "OMR read leases past their expiry (a node died or stalled).", [({}, expired_reads)])
    out.family("mc_omr_read_retries_total", "counter",
               "OMR read attempts beyond the first (lease expiries and failures).", [({}, int(read_retries))])
    out.family("mc_marks_total", "counter", "Marks submitted.", [({}, marks_total)])
    out.family("mc_marks_per_second", "gauge", f"Marks submitted per second over the last {WINDOW_SECONDS} s.",
               [({}, round(marks_recent / WINDOW_SECONDS, 4))])
    out.family("mc_omr_reads_per_second", "gauge", f"OMR reads completed per second over the last {WINDOW_SECONDS} s.",
               [({}, round(reads_recent / WINDOW_SECONDS, 4))])
    out.family("mc_omr_cards_per_second", "gauge",
               f"Cards with a completed OMR read per second over the last {WINDOW_SECONDS} s.",
               [({}, round(cards_recent / WINDOW_SECONDS, 4))])
    out.family("mc_outbox_head_id", "gauge", "Newest live-event (outbox) id.", [({}, outbox_head)])
    out.family("mc_ledger_unchained_entries", "gauge",
               "Ledger events committed but not yet chained (deferred chaining; stays near zero).",
               [({}, unchained)])
    lag = (now - dt.datetime.strptime(oldest_unchained, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
           ).total_seconds() if oldest_unchained else 0.0
    out.family("mc_ledger_chain_lag_seconds", "gauge",
               "Age of the oldest unchained ledger event (a growing value: no chainer is running).",
               [({}, round(max(0.0, lag), 3))])
    with _http_lock:
        http = dict(_http)
    out.family("mc_http_requests_total", "counter", "HTTP responses served by this process, by status class.",
               [({"process": os.getpid(), "code": code}, n) for code, n in sorted(http.items())])
    out.family("mc_metrics_scrape_seconds", "gauge", "Time spent computing these metrics.",
               [({}, round(time.perf_counter() - started, 6))])
    return out.text()


@bp.route("/metrics")
@public
def metrics():
    settings = current_app.config["MC_SETTINGS"]
    if not allowed(settings):
        return Response("forbidden\n", status=403, mimetype="text/plain")
    body = collect(current_app.extensions["mc_db"])
    return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8",
                    headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
