"""Calibration settings: defaults, per-item overrides (``calibration_setting``).

Defaults follow reference/marking.md §4/§8: seeds 1 in 25 (1 in 10 for the first
50 marks of the local day), self-checks 1 % of live marks, NAEP-style qualification
thresholds, validity ≥ 80 % over the last 10 seeds, CUSUM k = 0.5, h = 8 (in-control ARL ≈ 10⁴ marks per side).
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from typing import Any

from sqlalchemy.orm import Session

from marking import ledger
from marking.models import CalibrationSetting

DEFAULTS: dict[str, Any] = {
    # Seeds (质检卷): one in ``seed_rate`` live claims on average, jittered in [N/2, 3N/2]
    # so markers cannot count; ``seed_rate_start`` for the first ``start_of_day`` claims.
    "seed_rate": 25,
    "seed_rate_start": 10,
    "start_of_day": 50,
    # Keyed schedule: set a secret per item in production so markers cannot predict seeds.
    "schedule_salt": "",
    # Self-checks (自评): per-mille of live claims re-served; only responses marked at
    # least ``self_check_min_age`` claims ago.
    "self_check_pm": 10,
    "self_check_min_age": 20,
    # Qualification (上岗考核): responses per attempt; rules by item maximum (points):
    # [upper bound (None = any), "exact" | "within", required share in per-mille].
    "qualification_size": 10,
    "qualification_rules": [[2, "exact", 900], [3, "exact", 800], [6, "exact", 700], [None, "within", 800]],
    # Validity: share of seeds within tolerance over the last ``validity_window`` seeds,
    # judged once ``validity_min_seeds`` have been marked since the last qualification.
    "validity_threshold_pm": 800,
    "validity_window": 10,
    "validity_min_seeds": 5,
    # Drift alarms on standardised streams: seed errors and co-marker differences.
    "drift_method": "cusum",       # "cusum" | "ewma" | "both"
    "cusum_k": 0.5,
    "cusum_h": 8.0,
    "ewma_lambda": 0.2,
    "ewma_L": 3.0,
    "drift_min_pairs": 20,
    # Auto-suspension on validity or drift (False: alarms are reported only).
    "auto_suspend": True,
    # Speed and central tendency.
    "fast_ms": 5000,
    "middle_band": [0.68, 0.74],
}


def _merge(params: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(DEFAULTS)
    for key, value in params.items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown calibration setting {key!r}; known: {', '.join(sorted(DEFAULTS))}")
        merged[key] = value
    return merged


def for_item(session: Session, item_id: int) -> dict[str, Any]:
    row = session.get(CalibrationSetting, item_id)
    return merged(row.params if row else None)


def merged(params_json: str | None) -> dict[str, Any]:
    """The effective settings from an item's stored overrides (JSON text, or None)."""
    return copy.deepcopy(_merged_text(params_json))


def merged_readonly(params_json: str | None) -> dict[str, Any]:
    """:func:`merged` for callers that only read the settings: one shared dict per stored
    text, not a fresh deep copy (dispatch reads them on every claim). Never mutate it."""
    return _merged_text(params_json)


@functools.lru_cache(maxsize=128)
def _merged_text(params_json: str | None) -> dict[str, Any]:
    return _merge(json.loads(params_json) if params_json else {})


def set_for_item(session: Session, item_id: int, changes: dict[str, Any], *, actor_id: int | None,
                 now: dt.datetime) -> dict[str, Any]:
    """Store overrides (validated) and log them; returns the effective settings."""
    row = session.get(CalibrationSetting, item_id)
    current = json.loads(row.params) if row else {}
    current.update(changes)
    effective = _merge(current)
    text = json.dumps(current, sort_keys=True, separators=(",", ":"))
    if row is None:
        session.add(CalibrationSetting(item_id=item_id, params=text, updated_by=actor_id, updated_at=now))
    else:
        row.params, row.updated_by, row.updated_at = text, actor_id, now
    # The ledger refuses floats: settings are logged as text.
    ledger.append(session, actor_id=actor_id, action="calibration.settings", entity="item", entity_id=item_id,
                  data={k: json.dumps(v) for k, v in sorted(changes.items()) if k != "schedule_salt"}, at=now)
    return effective


def qualification_rule(settings: dict[str, Any], max_points) -> tuple[str, int]:
    """(``exact`` | ``within``, required per-mille) for an item worth ``max_points``."""
    for bound, kind, required in settings["qualification_rules"]:
        if bound is None or max_points <= bound:
            return kind, int(required)
    return "within", 800
