"""Structured logs: one JSON object per line (MC_LOG_FORMAT=json), one request log per response.

Request log fields: ``request_id`` (the proxy's ``X-Request-ID`` when well-formed, else a
new one; echoed in the response), ``user_id`` (numeric id only), ``method``, ``route``
(the URL *rule*, e.g. ``/api/v1/items/<int:item_id>/claim`` — never the query string),
``status``, ``duration_ms``, ``pid``. The duration is also sent back as
``Server-Timing: app;dur=<ms>``. Never logged: headers, cookies, query strings,
form or JSON bodies, usernames, candidate data — so no secrets or personal data.
Other log lines written while a request is handled carry its ``request_id`` too.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import time

from flask import Flask, g, has_request_context, request

log = logging.getLogger("web.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = g.get("request_id")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_") and value is not None:
                entry[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def logging_dict(fmt: str = "json", level: str = "INFO") -> dict:
    """A ``logging.config.dictConfig`` dict (also gunicorn's ``logconfig_dict``)."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {
        "format": "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s] %(message)s",
        "defaults": {"request_id": "-"}}
    handler = {"class": "logging.StreamHandler", "formatter": "mc", "filters": ["request_id"],
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"mc": formatter},
        "handlers": {"console": handler},
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False},
        },
    }


def _start() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)


def _finish(response):
    from .metrics import count_request
    started = g.get("request_started")
    duration = (time.perf_counter() - started) * 1000 if started else None
    user = g.get("user")
    rule = request.url_rule.rule if request.url_rule is not None else None
    count_request(response.status_code)
    if g.get("request_id"):
        response.headers.setdefault("X-Request-ID", g.request_id)
    if duration is not None:
        # The server's own share of a request's time (standard header, shown by browsers'
        # developer tools): the load benchmark splits a latency tail into server and queue.
        response.headers["Server-Timing"] = f"app;dur={duration:.1f}"
    if rule != "/static/<path:filename>":
        log.info("%s %s %s", request.method, rule or "<unmatched>", response.status_code,
                 extra={"request_id": g.get("request_id"), "user_id": getattr(user, "id", None),
                        "method": request.method, "route": rule or "<unmatched>",
                        "status": response.status_code,
                        "duration_ms": round(duration, 2) if duration is not None else None,
                        "pid": os.getpid()})
    return response


def init_app(app: Flask) -> None:
    # First before_request hook, so the id exists for everything after it (auth, errors).
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
