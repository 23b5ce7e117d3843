"""Persistence of resolution-policy versions (R-MARK-3).

A policy is a name plus parameters. Storing the same parameters again reuses the
version; different parameters under an existing name make a new version, never an
edit, so every final score names the exact rule that produced it.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .ledger import canonical_json
from .models import ResolutionPolicy

# Parameter vocabulary; defaults are the mainstream gaokao rule (reference/marking.md §2 A).
PARAMS: dict[str, tuple[str, ...]] = {
    # |a-b| <= T counts as agreement ("le") or only |a-b| < T ("lt").
    "comparison": ("le", "lt"),
    # nearest: third within T of one/both earlier marks -> mean with the (nearer) one, else arbitration;
    # within_both: third must be within T of both, else arbitration; third_final: third mark is final.
    "third_rule": ("nearest", "within_both", "third_final"),
    # When the third is equally near both earlier marks.
    "tie": ("higher", "lower", "mean_all"),
    # Zero and full marks get an extra read before they are final.
    "extra_read_extremes": ("false", "true"),
}
DEFAULTS = {key: values[0] for key, values in PARAMS.items()}


def validate_params(params: Mapping[str, str]) -> dict[str, str]:
    """Return the full parameter set (defaults filled in) or raise ValueError."""
    unknown = set(params) - set(PARAMS)
    if unknown:
        raise ValueError(f"unknown policy parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(PARAMS)}")
    full = dict(DEFAULTS)
    for key, value in params.items():
        value = str(value).lower()
        if value not in PARAMS[key]:
            raise ValueError(f"policy {key}={value!r}: use one of {', '.join(PARAMS[key])}")
        full[key] = value
    return full


def ensure_policy(session: Session, name: str, params: Mapping[str, str]) -> ResolutionPolicy:
    full = validate_params(params)
    text = canonical_json(full)
    digest = hashlib.sha256(f"{name}\n{text}".encode("utf-8")).hexdigest()
    existing = session.scalar(select(ResolutionPolicy).where(ResolutionPolicy.name == name,
                                                             ResolutionPolicy.content_hash == digest))
    if existing:
        return existing
    latest = session.scalar(select(func.max(ResolutionPolicy.version)).where(ResolutionPolicy.name == name)) or 0
    row = ResolutionPolicy(name=name, version=latest + 1, params=text, content_hash=digest)
    session.add(row)
    session.flush()
    return row
