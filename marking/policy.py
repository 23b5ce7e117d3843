"""Resolution policies (R-MARK-3): pure rules over exact Fractions, stored versioned.

A policy turns the marks a response has so far into one decision: wait for more
marks, deal a third mark, send to arbitration, deal an extra read, or final.
Everything here is pure except :func:`ensure_policy` / :func:`policy_for_item`,
which store and fetch versions in ``resolution_policy``.

Parameters (``default_params()`` is rule A of docs/marking.md, the mainstream gaokao
rule):

``agreement``      ``"le"``: |a−b| ≤ T agrees (rule A); ``"lt"``: |a−b| < T agrees
                   (rule B, "达到或超过阈值" escalates).
``third_rule``     ``"nearest"`` (A): the third within T of one earlier mark → mean
                   of the third and that mark; within T of both → mean with the nearer;
                   within neither → arbitration.
                   ``"within_both"`` (C, "2+1+1"): only a third within T of *both*
                   earlier marks resolves (mean with the nearer); otherwise arbitration.
                   ``"third_final"`` (D, 三评终审制): the third mark is final.
``tie``            third equidistant from both earlier marks (both within T):
                   ``"higher"`` → mean(third, higher), ``"lower"`` → mean(third,
                   lower), ``"mean_all"`` → mean of all three.
``extra_read_zero`` / ``extra_read_full``  (★, rule F) a provisional final of 0 or of
                   full marks gets an extra read before it is final; an extra read
                   within T confirms it, otherwise the team leader arbitrates.
``third_sees_marks`` / ``arbiter_sees_marks``  whether those readers are shown the
                   earlier marks (blind third by default; the arbitrator sees all).

T (the item's threshold) is not a policy parameter: it is set per item
(``Item.threshold_cp``). A changed rule is a new version, never an edit.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .db import is_read_session
from .models import Item, ResolutionPolicy
from .scores import mean

DEFAULT_NAME = "default"
POLICY_SCHEMA = 1
AGREEMENT = ("le", "lt")
THIRD_RULES = ("nearest", "within_both", "third_final")
TIE_RULES = ("higher", "lower", "mean_all")
BOOL_KEYS = ("extra_read_zero", "extra_read_full", "third_sees_marks", "arbiter_sees_marks")


class PolicyError(ValueError):
    pass


def default_params() -> dict[str, Any]:
    """Rule A: ≤ T agrees, mean with the nearer, tie → higher, extra reads of 0 and full."""
    return {
        "schema": POLICY_SCHEMA,
        "agreement": "le",
        "third_rule": "nearest",
        "tie": "higher",
        "extra_read_zero": True,
        "extra_read_full": True,
        "third_sees_marks": False,
        "arbiter_sees_marks": True,
    }


def normalise(params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in, every value validated; unknown keys are refused."""
    merged = default_params()
    for key, value in (params or {}).items():
        if key not in merged:
            raise PolicyError(f"unknown policy parameter {key!r}; known: {', '.join(sorted(merged))}")
        merged[key] = value
    if merged["schema"] != POLICY_SCHEMA:
        raise PolicyError(f"policy schema {merged['schema']!r} is not supported (expected {POLICY_SCHEMA})")
    for key, allowed in (("agreement", AGREEMENT), ("third_rule", THIRD_RULES), ("tie", TIE_RULES)):
        if merged[key] not in allowed:
            raise PolicyError(f"policy {key} must be one of {', '.join(allowed)}, got {merged[key]!r}")
    for key in BOOL_KEYS:
        if not isinstance(merged[key], bool):
            raise PolicyError(f"policy {key} must be true or false, got {merged[key]!r}")
    return merged


def canonical(params: dict[str, Any]) -> str:
    return json.dumps(normalise(params), sort_keys=True, separators=(",", ":"))


def content_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(params).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- pure rules

@dataclass(frozen=True)
class MarkSet:
    """The live marks of one response, in points (exact). None = not marked yet."""

    first: Fraction | None = None
    second: Fraction | None = None
    third: Fraction | None = None
    arbitration: Fraction | None = None
    extra: Fraction | None = None


@dataclass(frozen=True)
class Decision:
    """``action``: wait | third | arbitration | extra | final."""

    action: str
    final: Fraction | None = None
    outcome: str | None = None          # Resolution.outcome when final
    used: tuple[str, ...] = ()          # which marks made the final score
    provisional: Fraction | None = None  # the score an extra read is checking
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def agrees(a: Fraction, b: Fraction, threshold: Fraction, agreement: str = "le") -> bool:
    """R-MARK-3: two marks agree when |a−b| ≤ T (``le``) or < T (``lt``)."""
    gap = abs(Fraction(a) - Fraction(b))
    return gap <= threshold if agreement == "le" else gap < threshold


def resolve_third(params: dict[str, Any], a: Fraction, b: Fraction, c: Fraction,
                  threshold: Fraction) -> tuple[Fraction | None, tuple[str, ...], str]:
    """Score from three marks, or None for arbitration. Returns (final, used, note)."""
    rule, tie, agreement = params["third_rule"], params["tie"], params["agreement"]
    if rule == "third_final":
        return Fraction(c), ("third",), "third mark is final (rule D)"
    near_a = agrees(c, a, threshold, agreement)
    near_b = agrees(c, b, threshold, agreement)
    if near_a and near_b:
        da, db_ = abs(c - a), abs(c - b)
        if da < db_:
            return mean([c, a]), ("third", "first"), "third near both; nearer is first"
        if db_ < da:
            return mean([c, b]), ("third", "second"), "third near both; nearer is second"
        if tie == "mean_all":
            return mean([a, b, c]), ("first", "second", "third"), "tie: mean of all three"
        pick_first = (a >= b) if tie == "higher" else (a <= b)
        return (mean([c, a]), ("third", "first"), f"tie: {tie}") if pick_first else \
            (mean([c, b]), ("third", "second"), f"tie: {tie}")
    if rule == "within_both":
        return None, (), "third not within T of both (rule C)"
    if near_a:
        return mean([c, a]), ("third", "first"), "third near first only"
    if near_b:
        return mean([c, b]), ("third", "second"), "third near second only"
    return None, (), "third within T of neither"


def decide(params: dict[str, Any], marks: MarkSet, *, threshold: Fraction, max_score: Fraction,
           double_marked: bool = True) -> Decision:
    """The next step for one response under ``params`` (already normalised).

    Pure and exact: every input and output is a Fraction; no float anywhere.
    """
    for value in (threshold, max_score, marks.first, marks.second, marks.third, marks.arbitration, marks.extra):
        if isinstance(value, float):
            raise TypeError("binary floats are not allowed in a score path (R-MARK-2)")
    if marks.arbitration is not None:  # R-MARK-3: the team leader's score is final
        return Decision("final", Fraction(marks.arbitration), "arbitrated", ("arbitration",))
    if marks.first is None:
        return Decision("wait")
    threshold = Fraction(threshold)
    if not double_marked:
        provisional, outcome, used = Fraction(marks.first), "single", ("first",)
    else:
        if marks.second is None:
            return Decision("wait")
        a, b = Fraction(marks.first), Fraction(marks.second)
        if agrees(a, b, threshold, params["agreement"]):
            provisional, outcome, used = mean([a, b]), "agreed", ("first", "second")
        else:
            if marks.third is None:
                return Decision("third", note="first and second differ by more than T")
            final, used, note = resolve_third(params, a, b, Fraction(marks.third), threshold)
            if final is None:
                return Decision("arbitration", note=note)
            provisional, outcome = final, "third_resolved"
    extreme = ((params["extra_read_zero"] and provisional == 0)
               or (params["extra_read_full"] and provisional == Fraction(max_score)))
    if extreme:
        if marks.extra is None:
            return Decision("extra", provisional=provisional, note="zero or full marks: extra read")
        if not agrees(Fraction(marks.extra), provisional, threshold, params["agreement"]):
            return Decision("arbitration", provisional=provisional,
                            note="extra read disagrees with the provisional score")
        used = used + ("extra",)
    return Decision("final", provisional, outcome, used)


# --------------------------------------------------------------------------- storage

def ensure_policy(session: Session, name: str, params: dict[str, Any] | None) -> ResolutionPolicy:
    """Get the version of policy ``name`` with exactly these (normalised) params, or add one.

    Idempotent: the same params return the same row; different params add version
    max+1. Runs in the caller's transaction; two concurrent creators collide on
    UNIQUE(name, version) and the loser's ``db.run`` retries and finds the row.
    """
    text_ = canonical(params or {})
    digest = hashlib.sha256(text_.encode("utf-8")).hexdigest()
    # Both facts from one statement, hence one snapshot: read separately, a version with
    # these params committed between the two reads was missed by the first and counted
    # by the second, and a duplicate version max+1 was added (seen under load, issue 8).
    existing_id, latest = session.execute(select(
        select(ResolutionPolicy.id).where(ResolutionPolicy.name == name, ResolutionPolicy.content_hash == digest)
        .order_by(ResolutionPolicy.version.desc()).limit(1).scalar_subquery(),
        select(func.max(ResolutionPolicy.version)).where(ResolutionPolicy.name == name).scalar_subquery(),
    )).one()
    if existing_id is not None:
        return session.get(ResolutionPolicy, existing_id)
    row = ResolutionPolicy(name=name, version=(latest or 0) + 1, params=text_, content_hash=digest)
    session.add(row)
    session.flush()
    return row


def params_of(row: ResolutionPolicy) -> dict[str, Any]:
    """The normalised parameters of a stored version, after checking its hash."""
    return dict(_verified_params(row.name, row.version, row.params, row.content_hash))


@functools.lru_cache(maxsize=256)
def _verified_params(name: str, version: int, text_: str, content_hash: str) -> dict[str, Any]:
    # Keyed by the stored text and hash themselves, so a cached answer is always the
    # answer for these bytes (every decision reads its policy: issue 8's load target).
    if content_hash != hashlib.sha256(text_.encode("utf-8")).hexdigest():
        raise PolicyError(f"resolution policy {name} v{version} does not match its hash")
    return normalise(json.loads(text_))


DEFAULT_HASH = hashlib.sha256(canonical(default_params()).encode("utf-8")).hexdigest()
# Policy rows read in this transaction, by (item id, item's policy id): versions are
# immutable, so a transaction reads its item's policy at most once; dropped on rollback
# (the row may have been created by the transaction being rolled back).
MEMO_KEY = "policy_rows"


def default_policy_id():
    """SQL: the id of the stored default policy version, for callers that fold it into a read."""
    return (select(ResolutionPolicy.id)
            .where(ResolutionPolicy.name == DEFAULT_NAME, ResolutionPolicy.content_hash == DEFAULT_HASH)
            .order_by(ResolutionPolicy.version.desc()).limit(1).scalar_subquery())


def remember_policy(session: Session, item: Item, row: ResolutionPolicy | None) -> None:
    """Record the item's policy row read by the caller's own query (None: not stored yet)."""
    if row is not None:
        session.info.setdefault(MEMO_KEY, {})[(item.id, item.policy_id)] = row


def policy_for_item(session: Session, item: Item) -> tuple[ResolutionPolicy, dict[str, Any]]:
    """The item's policy version, or the default policy (stored, so it can be named).

    In a read-only transaction (``db.read()``) a default policy not stored yet is
    returned unsaved: readers only need its parameters, and a read never writes. The
    first decision (a write) stores it.
    """
    memo = session.info.get(MEMO_KEY)
    row = memo.get((item.id, item.policy_id)) if memo else None
    if row is None:
        row = session.get(ResolutionPolicy, item.policy_id) if item.policy_id else None
        if row is None:
            params = default_params()
            if not is_read_session(session):
                row = ensure_policy(session, DEFAULT_NAME, params)
            else:
                text_ = canonical(params)
                digest = hashlib.sha256(text_.encode("utf-8")).hexdigest()
                row = session.execute(
                    select(ResolutionPolicy).where(ResolutionPolicy.name == DEFAULT_NAME,
                                                   ResolutionPolicy.content_hash == digest)
                    .order_by(ResolutionPolicy.version.desc()).limit(1)
                ).scalar_one_or_none() or ResolutionPolicy(name=DEFAULT_NAME, version=0, params=text_,
                                                           content_hash=digest)
        if row.id is not None:
            remember_policy(session, item, row)
    return row, params_of(row)


def _forget_policies(session: Session, *_args) -> None:
    session.info.pop(MEMO_KEY, None)


sa_event.listen(Session, "after_rollback", _forget_policies)
