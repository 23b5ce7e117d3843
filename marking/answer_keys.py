"""Answer keys (R-OMR-2) and exact objective scoring (R-MARK-2).

Key workflow:

1. ``enter_key`` — a ``key_officer`` enters the correct options (and points) for every
   objective item of a subject: a new *draft* version, body as canonical JSON,
   ``content_hash`` = sha256 of it.
2. ``sign_key`` — two or more OTHER users check and sign it: at least one as
   ``authority_officer`` (the exam authority's officer, holding that role), the others as
   ``reviewer`` (key_officer or authority_officer role). The person who entered it can
   never sign it (also UNIQUE(key, user)).
3. ``lock_key`` — with the sign-offs in place the key is locked: ``locked_hash`` =
   sha256 over the key's identity, content hash and sign-offs, and the same value is
   written to the hash-chained ledger. Any earlier locked version becomes
   ``superseded`` (kept), and scripts already scored are rescored with the new key;
   the old ``objective_answer`` rows (per key) are kept.
4. ``verify_key`` runs before every scoring run: it recomputes both hashes and checks
   them against the ledger's record of the lock; any mismatch refuses scoring.

Scoring (exact, centipoints): single choice — exactly one option filled and it is in
the key → full points; multiple choice — the filled set equals the key → full; a
non-empty proper subset of the key → ``Item.partial_cp`` under ``partial_subset``
(else 0); any wrong option → 0; blank → 0. Absent scripts are not scored.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import backup, events, ledger, totals
from .access import NotAllowed, active_user, require_role
from .batches import BatchError, TwoPersonError, find_subject
from .models import (AnswerKey, AnswerKeySignoff, Card, Item, ObjectiveAnswer, Script, Subject)
from .omr_compare import canonical
from .scores import ScoreError, format_points, from_cp, parse_points, to_cp

ENTRY_ROLES = ("key_officer",)
REVIEWER_ROLES = ("key_officer", "authority_officer")
MIN_SIGNOFFS = 2


class KeyError_(BatchError):
    pass


class KeyIntegrityError(RuntimeError):
    """The locked key in the database does not match its hashes or the ledger (tampering)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now(now):
    return now or dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- entry

def parse_key_file(path) -> dict[str, Any]:
    """``item,answer[,points]`` CSV (header optional) → the dict ``enter_key`` takes."""
    import csv
    out: dict[str, Any] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.reader(handle):
            if not row or row[0].strip().lower() in ("item", "code", "") or row[0].startswith("#"):
                continue
            code, answer = row[0].strip(), row[1].strip() if len(row) > 1 else ""
            out[code] = {"answer": answer, "points": row[2].strip()} if len(row) > 2 and row[2].strip() else answer
    return out


def _build_body(session: Session, subject: Subject, answers: dict[str, Any]) -> dict[str, Any]:
    items = session.execute(select(Item).where(Item.subject_id == subject.id, Item.kind == "objective")
                            .order_by(Item.ordinal)).scalars().all()
    if not items:
        raise KeyError_(f"subject {subject.code} has no objective items")
    codes = {i.code for i in items}
    errors = [f"item {c}: not an objective item of {subject.code}" for c in answers if c not in codes]
    body_items: dict[str, Any] = {}
    for item in items:
        raw = answers.get(item.code)
        if raw is None:
            errors.append(f"item {item.code}: no answer given")
            continue
        spec = raw if isinstance(raw, dict) else {"answer": raw}
        answer = "".join(sorted(str(spec.get("answer", "")).upper().replace(",", "").replace(" ", "")))
        if not answer or len(set(answer)) != len(answer) or not set(answer) <= set(item.options or ""):
            errors.append(f"item {item.code}: answer {spec.get('answer')!r} must be options from {item.options}")
            continue
        if not item.multi_select and len(answer) != 1:
            errors.append(f"item {item.code}: single-choice item needs exactly one option")
            continue
        points_cp = item.max_cp
        if spec.get("points") is not None:
            try:
                points_cp = to_cp(parse_points(str(spec["points"])))
            except (ScoreError, TypeError) as exc:
                errors.append(f"item {item.code}: points: {exc}")
                continue
            if points_cp != item.max_cp:
                errors.append(f"item {item.code}: points {format_points(from_cp(points_cp))} differ from the "
                              f"exam specification ({format_points(from_cp(item.max_cp))})")
                continue
        entry = {"answer": answer, "points_cp": points_cp, "kind": "multiple" if item.multi_select else "single"}
        if item.multi_select:
            entry["multi_rule"] = item.multi_rule or "all_or_nothing"
            entry["partial_cp"] = item.partial_cp if item.multi_rule == "partial_subset" else 0
        body_items[item.code] = entry
    if errors:
        raise KeyError_("; ".join(errors))
    return {"subject": subject.code, "items": body_items}


def enter_key(db, subject_code: str, user_id: int, answers: dict[str, Any], *,
              now: dt.datetime | None = None) -> AnswerKey:
    """A key_officer enters a new key version (draft)."""
    now = _now(now)

    def work(session: Session) -> AnswerKey:
        user = active_user(session, user_id)
        require_role(user, *ENTRY_ROLES)
        subject = find_subject(session, subject_code)
        body = _build_body(session, subject, answers)
        text = canonical(body)
        version = (session.scalar(select(func.max(AnswerKey.version)).where(AnswerKey.subject_id == subject.id)) or 0) + 1
        key = AnswerKey(subject_id=subject.id, version=version, body=text, content_hash=_sha(text), status="draft",
                        entered_by=user.id, created_at=now)
        session.add(key)
        session.flush()
        ledger.append(session, actor_id=user.id, action="answer_key.entered", entity="answer_key", entity_id=key.id,
                      data={"subject": subject.code, "version": version, "content_hash": key.content_hash})
        return key

    return db.run(work, retry_integrity=False)


def sign_key(db, key_id: int, user_id: int, as_role: str, *, expected_hash: str | None = None,
             now: dt.datetime | None = None) -> None:
    """Another user checks the key and signs it as ``reviewer`` or ``authority_officer``.

    ``expected_hash``: the content hash the signer was shown; a mismatch refuses.
    """
    now = _now(now)
    if as_role not in ("reviewer", "authority_officer"):
        raise KeyError_("sign as 'reviewer' or 'authority_officer'")

    def work(session: Session) -> None:
        user = active_user(session, user_id)
        require_role(user, *(("authority_officer",) if as_role == "authority_officer" else REVIEWER_ROLES))
        key = session.execute(select(AnswerKey).where(AnswerKey.id == key_id).with_for_update()).scalar_one_or_none()
        if key is None:
            raise KeyError_(f"no answer key {key_id}")
        if key.status != "draft":
            raise KeyError_(f"key {key_id} is {key.status}; only a draft is signed")
        if key.entered_by == user.id:
            raise TwoPersonError("the person who entered the key cannot sign it off (R-OMR-2)")
        if _sha(key.body) != key.content_hash:
            raise KeyIntegrityError(f"key {key_id}: body does not match its content hash")
        if expected_hash is not None and expected_hash != key.content_hash:
            raise KeyError_("the key changed since you checked it; check it again")
        if session.scalar(select(AnswerKeySignoff.id).where(AnswerKeySignoff.key_id == key.id,
                                                            AnswerKeySignoff.user_id == user.id)):
            raise KeyError_(f"{user.username} has already signed key {key_id}")
        session.add(AnswerKeySignoff(key_id=key.id, user_id=user.id, as_role=as_role, signed_at=now))
        session.flush()
        ledger.append(session, actor_id=user.id, action="answer_key.signed", entity="answer_key", entity_id=key.id,
                      data={"as_role": as_role, "content_hash": key.content_hash})

    db.run(work, retry_integrity=False)


def _signoffs(session: Session, key_id: int) -> list[AnswerKeySignoff]:
    return list(session.execute(select(AnswerKeySignoff).where(AnswerKeySignoff.key_id == key_id)
                                .order_by(AnswerKeySignoff.user_id)).scalars())


def _locked_hash(key: AnswerKey, signoffs: list[AnswerKeySignoff]) -> str:
    return _sha(canonical({"key_id": key.id, "subject_id": key.subject_id, "version": key.version,
                           "content_hash": key.content_hash, "entered_by": key.entered_by,
                           "signoffs": [[s.user_id, s.as_role] for s in sorted(signoffs, key=lambda s: s.user_id)]}))


def lock_key(db, key_id: int, user_id: int, *, now: dt.datetime | None = None, rescore: bool = True) -> dict[str, Any]:
    """Lock a signed-off key (R-OMR-2); supersede the old version and rescore (old results kept)."""
    now = _now(now)

    def work(session: Session) -> dict[str, Any]:
        user = active_user(session, user_id)
        require_role(user, "key_officer", "authority_officer", "admin")
        key = session.execute(select(AnswerKey).where(AnswerKey.id == key_id).with_for_update()).scalar_one_or_none()
        if key is None or key.status != "draft":
            raise KeyError_(f"key {key_id} is not a draft")
        if _sha(key.body) != key.content_hash:
            raise KeyIntegrityError(f"key {key_id}: body does not match its content hash")
        signoffs = _signoffs(session, key.id)
        others = [s for s in signoffs if s.user_id != key.entered_by]
        if len({s.user_id for s in others}) < MIN_SIGNOFFS or not any(s.as_role == "authority_officer" for s in others):
            raise NotAllowed(f"key {key_id} needs sign-off by at least {MIN_SIGNOFFS} people other than the one who "
                             "entered it, one of them the authority's officer (R-OMR-2)")
        previous = session.execute(select(AnswerKey).where(AnswerKey.subject_id == key.subject_id,
                                                           AnswerKey.status == "locked").with_for_update()).scalars().all()
        for old in previous:
            old.status = "superseded"
        key.locked_hash = _locked_hash(key, signoffs)
        key.status = "locked"
        key.locked_at = now
        ledger.append(session, actor_id=user.id, action="answer_key.locked", entity="answer_key", entity_id=key.id,
                      data={"subject_id": key.subject_id, "version": key.version, "content_hash": key.content_hash,
                            "locked_hash": key.locked_hash, "supersedes": [o.id for o in previous],
                            "signoffs": [[s.user_id, s.as_role] for s in signoffs]},
                      reason="key_change" if previous else None)
        subject = session.get(Subject, key.subject_id)
        scored = session.scalar(select(func.count()).select_from(Script).where(
            Script.subject_id == key.subject_id, Script.objective_cp.is_not(None)))
        return {"key_id": key.id, "version": key.version, "locked_hash": key.locked_hash,
                "superseded": [o.id for o in previous], "subject": subject.code, "scored_scripts": scored or 0}

    with backup.change_window("key-change"):   # R-DATA-2: backups around a key change, if configured
        info = db.run(work, retry_integrity=False)
        if rescore and info["superseded"] and info["scored_scripts"]:
            info["rescore"] = score_subject(db, info["subject"], actor_id=user_id, reason="key_change")
    return info


def verify_key(session: Session, key: AnswerKey) -> None:
    """Raise KeyIntegrityError unless the locked key matches its hashes and the ledger."""
    if key.status != "locked":
        raise KeyIntegrityError(f"key {key.id} is {key.status}, not locked")
    if _sha(key.body) != key.content_hash:
        raise KeyIntegrityError(f"answer key {key.id} (v{key.version}): the key body does not match its content hash "
                                "— the key was altered after it was entered (R-OMR-2); scoring refused")
    if key.locked_hash != _locked_hash(key, _signoffs(session, key.id)):
        raise KeyIntegrityError(f"answer key {key.id} (v{key.version}): locked hash mismatch — the key or its "
                                "sign-offs were altered after locking (R-OMR-2); scoring refused")
    # Chained or still waiting for the chainer (deferred chaining): both are the record.
    events_ = ledger.recorded_data(session, action="answer_key.locked", entity="answer_key", entity_id=str(key.id))
    recorded = [json.loads(d) for d in events_]
    if not any(r.get("locked_hash") == key.locked_hash and r.get("content_hash") == key.content_hash for r in recorded):
        raise KeyIntegrityError(f"answer key {key.id} (v{key.version}): its hashes differ from the ledger's record "
                                "of the lock — the key was rewritten in the database (R-OMR-2); scoring refused")


def current_key(session: Session, subject_id: int) -> AnswerKey | None:
    return session.execute(select(AnswerKey).where(AnswerKey.subject_id == subject_id, AnswerKey.status == "locked")
                           .order_by(AnswerKey.version.desc()).limit(1)).scalar_one_or_none()


def show_keys(db, subject_code: str) -> list[dict[str, Any]]:
    with db.read() as session:
        subject = find_subject(session, subject_code)
        out = []
        for key in session.execute(select(AnswerKey).where(AnswerKey.subject_id == subject.id)
                                   .order_by(AnswerKey.version)).scalars():
            ok, problem = True, None
            if key.status == "locked":
                try:
                    verify_key(session, key)
                except KeyIntegrityError as exc:
                    ok, problem = False, str(exc)
            out.append({"id": key.id, "version": key.version, "status": key.status, "content_hash": key.content_hash,
                        "locked_hash": key.locked_hash, "entered_by": key.entered_by,
                        "signoffs": [{"user_id": s.user_id, "as_role": s.as_role} for s in _signoffs(session, key.id)],
                        "items": json.loads(key.body)["items"], "intact": ok, "problem": problem})
        return out


# --------------------------------------------------------------------------- scoring

def score_item(entry: dict[str, Any], chosen: str) -> int:
    """Centipoints for one objective item (exact integers, R-MARK-2)."""
    filled, key = set(chosen), set(entry["answer"])
    if not filled:
        return 0
    if entry["kind"] == "single":
        return entry["points_cp"] if len(filled) == 1 and filled <= key else 0
    if filled == key:
        return entry["points_cp"]
    if filled < key and entry.get("multi_rule") == "partial_subset":
        return int(entry.get("partial_cp") or 0)
    return 0


def _state(chosen: str) -> str:
    return "blank" if not chosen else ("single" if len(chosen) == 1 else "multiple")


def script_answers(session: Session, script_id: int) -> dict[str, str]:
    answers: dict[str, str] = {}
    for text in session.execute(select(Card.accepted_reading).where(Card.script_id == script_id,
                                                                    Card.status.in_(("agreed", "resolved")))
                                .order_by(Card.page_code)).scalars():
        answers.update(json.loads(text).get("answers", {}))
    return answers


def score_subject(db, subject_code: str, *, actor_id: int | None = None, reason: str | None = None,
                  now: dt.datetime | None = None) -> dict[str, Any]:
    """Score every assembled script of the subject with its locked key (verified first)."""
    now = _now(now)

    def work(session: Session) -> dict[str, Any]:
        subject = find_subject(session, subject_code)
        key = current_key(session, subject.id)
        if key is None:
            raise KeyError_(f"subject {subject.code} has no locked answer key (R-OMR-2)")
        verify_key(session, key)  # before anything is scored
        body = json.loads(key.body)["items"]
        items = {i.code: i for i in session.execute(select(Item).where(Item.subject_id == subject.id,
                                                                        Item.kind == "objective")).scalars()}
        if set(body) != set(items):
            raise KeyIntegrityError("the key does not cover exactly the subject's objective items")
        scripts = session.execute(select(Script).where(Script.subject_id == subject.id).order_by(Script.id)
                                  .with_for_update()).scalars().all()
        existing: dict[tuple[int, int], ObjectiveAnswer] = {
            (r.script_id, r.item_id): r for r in session.execute(
                select(ObjectiveAnswer).where(ObjectiveAnswer.key_id == key.id)).scalars()}
        scored = changed = skipped = 0
        for script in scripts:
            if script.absent:
                skipped += 1
                continue
            answers = script_answers(session, script.id)
            if not answers:
                skipped += 1
                continue
            total = 0
            differs = False
            for code, entry in body.items():
                chosen = answers.get(code, "")
                cp = score_item(entry, chosen)
                total += cp
                row = existing.get((script.id, items[code].id))
                if row is None:
                    differs = True
                    session.add(ObjectiveAnswer(script_id=script.id, item_id=items[code].id, key_id=key.id,
                                                chosen=chosen, state=_state(chosen), score_cp=cp))
                elif (row.chosen, row.score_cp) != (chosen, cp):
                    # a reading corrected after scoring (two-person register); the ledger keeps before/after
                    differs = True
                    row.chosen, row.state, row.score_cp = chosen, _state(chosen), cp
            before = script.objective_cp
            if not differs and before == total:
                skipped += 1
                continue
            script.objective_cp = total
            scored += 1
            if before != total:
                changed += 1
            ledger.append(session, actor_id=actor_id, action="objective.scored", entity="script", entity_id=script.id,
                          reason=reason if before is not None else None, at=now,
                          data={"key_id": key.id, "key_version": key.version,
                                "before": ledger.score_text(from_cp(before)) if before is not None else None,
                                "objective": ledger.score_text(from_cp(total))})
            totals.recompute_script(session, script.id, now=now, actor_id=actor_id, reason=reason)
        events.publish(session, f"subject:{subject.id}", "objective.scored",
                       {"subject_id": subject.id, "scored": scored})
        return {"subject": subject.code, "key_id": key.id, "key_version": key.version, "scored": scored,
                "changed": changed, "skipped": skipped}

    return db.run(work, retry_integrity=False)
