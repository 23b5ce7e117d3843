"""Demo support: a realistic scanner batch for subject 00015 of examples/exam-2026-10.yaml.

``make_demo_batch(out_dir, template, roll_numbers, n_cards=200, seed=2026)`` writes
~200 filled, scanned cards (omr.synthetic) with realistic artefacts: faint marks,
erasures, a mis-filled candidate number (ID error), a torn card, a duplicate scan and
a truncated file. ``run_demo_batch(db, settings)`` first runs a synthetic R-OMR-1
trial run (tech1), then ingests them, reads them on two OMR nodes (two local
processes), assembles scripts, cuts item images for marking,
has the key entered (keyofficer), signed (reviewer, authority) and locked, scores,
and draws the spot-check sample. The exceptions it produces are left for the demo's
technicians (tech1 proposes, tech2 confirms).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sqlalchemy import select

from marking import answer_keys, batches, spotcheck
from marking.models import Candidate, CardTemplate, Registration, User
from marking.storage import open_store

REPO = Path(__file__).resolve().parents[1]
DEMO_TEMPLATE = REPO / "examples" / "cards" / "zikao-a4-00015.json"


def demo_template_body() -> dict[str, Any]:
    """Subject 00015's one-page card (examples/cards/zikao-a4-00015.json): 1-25 single
    ABCD, 26-30 multiple ABCDE, written items 31-33; the demo spec names it."""
    return json.loads(DEMO_TEMPLATE.read_text(encoding="utf-8"))


def demo_key(template, seed: int = 2026) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    key: dict[str, str] = {}
    for block in template.pages[0].objective_blocks:
        for code in block.codes:
            if block.kind == "single":
                key[code] = block.options[int(rng.integers(len(block.options)))]
            else:
                k = int(rng.integers(2, 4))
                key[code] = "".join(sorted(rng.choice(list(block.options), size=k, replace=False)))
    return key


def _candidate_answers(template, key: dict[str, str], rng, ability: float) -> dict[str, str]:
    out = {}
    for block in template.pages[0].objective_blocks:
        for code in block.codes:
            r = rng.random()
            if r < 0.02:
                out[code] = ""
            elif block.kind == "single":
                out[code] = key[code] if r < ability else block.options[int(rng.integers(len(block.options)))]
            elif r < ability:
                out[code] = key[code]
            elif r < ability + 0.15:
                out[code] = key[code][: max(1, len(key[code]) - 1)]       # a correct subset
            else:
                k = int(rng.integers(1, 4))
                out[code] = "".join(sorted(rng.choice(list(block.options), size=k, replace=False)))
    return out


def _write_text(refl: np.ndarray, template, item: str, dpi: float, rng, lines: int) -> None:
    from .template import mm_to_px
    for region in template.pages[0].answer_regions:
        if region.item != item:
            continue
        x, y, w, h = region.rect_mm
        for n in range(lines):
            y0 = int(mm_to_px(y + 9 + n * 6, dpi))
            if y0 + 3 > mm_to_px(y + h - 2, dpi):
                break
            x0 = int(mm_to_px(x + 6 + rng.uniform(0, 4), dpi))
            x1 = int(mm_to_px(x + w * rng.uniform(0.5, 0.92), dpi))
            for xs in range(x0, x1, max(2, int(dpi / 25))):   # "words": short strokes
                if rng.random() < 0.8:
                    refl[y0 + int(rng.integers(-1, 2)):y0 + 2, xs:xs + max(1, int(dpi / 40))] *= 0.25


def make_demo_batch(out_dir: str | Path, template, roll_numbers: Sequence[str], n_cards: int = 200, *,
                    seed: int = 2026, dpi: float = 150, subject_code: str = "00015",
                    key: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the scans; return the ground truth and which artefact went where."""
    from .synthetic import ScanParams, Special, degrade, encode, fill_card
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    key = key or demo_key(template, seed)
    n = min(n_cards, len(roll_numbers))
    numbers = list(roll_numbers)[:n]
    artefacts: dict[str, list] = {"faint": [], "erasure": [], "id_error": [], "torn": [], "duplicate": [],
                                  "truncated": [], "near_empty": [], "absent": []}
    truths = {}
    single_codes = [c for b in template.pages[0].objective_blocks if b.kind == "single" for c in b.codes]
    for i, number in enumerate(numbers):
        answers = _candidate_answers(template, key, rng, ability=float(rng.uniform(0.45, 0.95)))
        specials = []
        absent = i == n - 3
        if absent:
            answers = {c: "" for c in answers}
            artefacts["absent"].append(number)
        elif i % 29 == 5:     # a faint but real mark
            code = single_codes[int(rng.integers(len(single_codes)))]
            answers[code] = answers[code] or "A"
            specials.append(Special("faint", code, answers[code], 0.45))
            artefacts["faint"].append((number, code))
        elif i % 37 == 7:     # an erasure next to the real answer
            code = single_codes[int(rng.integers(len(single_codes)))]
            chosen = answers[code] or "B"
            answers[code] = chosen
            other = next(o for o in "ABCD" if o != chosen)
            specials.append(Special("erasure", code, other, 0.35))
            artefacts["erasure"].append((number, code))
        filled = number
        if i == 11:           # ID error: one digit filled wrongly
            filled = number[:-1] + str((int(number[-1]) + 5) % 10)
            artefacts["id_error"].append({"true": number, "filled": filled})
        refl, truth = fill_card(template, answers, candidate_number=filled, subject_code=subject_code,
                                absent=absent, dpi=dpi, rng=rng, specials=specials, barcode=True)
        if not absent:
            for item in ("31", "32", "33"):
                if item == "33" and i % 19 == 3:
                    artefacts["near_empty"].append(number)
                    continue
                _write_text(refl, template, item, dpi, rng, lines=int(rng.integers(2, 6)))
        params = ScanParams(rotation_deg=float(rng.uniform(-1.5, 1.5)), noise_sigma=2.0,
                            blur_sigma=float(rng.uniform(0, 0.6)), illumination=float(rng.uniform(0, 0.08)))
        img = degrade(refl, params, rng, dpi)
        if i == 29:           # a torn card: two corner marks missing
            img[:, : img.shape[1] // 3] = 235
            artefacts["torn"].append(number)
        data = encode(img, "jpeg", 88)
        name = f"scan-{i + 1:04d}.jpg"
        (out / name).write_bytes(data)
        truths[number] = {"answers": truth.answers, "filled_number": filled, "absent": absent, "file": name}
    # the scanner operator fed one card twice, and one file was cut short in transfer
    dup_src = out / "scan-0002.jpg"
    (out / "scan-0002-rescanned-by-mistake.jpg").write_bytes(dup_src.read_bytes())
    artefacts["duplicate"].append("scan-0002.jpg")
    data = (out / "scan-0003.jpg").read_bytes()
    (out / "zz-transfer-error.jpg").write_bytes(data[: len(data) // 3])
    artefacts["truncated"].append("zz-transfer-error.jpg")
    (out / ".ground-truth.json").write_text(json.dumps({"key": key, "truths": truths, "artefacts": artefacts},
                                                          ensure_ascii=False, indent=1))
    return {"key": key, "truths": truths, "artefacts": artefacts, "files": n + 2}


def _user(session, username: str) -> int:
    uid = session.scalar(select(User.id).where(User.username == username))
    if uid is None:
        raise RuntimeError(f"demo user {username} missing: run web.demo.ensure_users first")
    return uid


def run_demo_batch(db, settings, *, subject_code: str = "00015", n_cards: int = 200, seed: int = 2026,
                   out_dir: str | Path | None = None, processes: bool = True, say=print) -> dict[str, Any]:
    """Trial run (R-OMR-1), ingest, double-read on two nodes, assemble, key (entered/signed/locked),
    score, spot-check sample."""
    from omr.template import load_template
    from .ingest import ingest_path
    from .trial import run_trial
    from .worker import Worker, spawn_nodes
    started = time.monotonic()
    with db.read() as session:
        subject = batches.find_subject(session, subject_code)
        body = json.loads(session.get(CardTemplate, subject.card_template_id).body) if subject.card_template_id else None
        roll = list(session.execute(
            select(Candidate.candidate_no).join(Registration, Registration.candidate_id == Candidate.id)
            .where(Registration.subject_id == subject.id).order_by(Candidate.candidate_no)).scalars())
        people = {name: _user(session, name) for name in ("keyofficer", "reviewer", "authority", "tech1")}
    if body is None:
        body = demo_template_body()
        batches.attach_template(db, subject_code, body, actor_id=people["tech1"])
        say(f"card template {body['id']} attached to subject {subject_code}")
    template = load_template(body)
    scans = Path(out_dir or settings.data_dir / "demo-scans" / subject_code)
    if not any(scans.glob("scan-*.jpg")):
        made = make_demo_batch(scans, template, roll, n_cards, seed=seed, subject_code=subject_code)
        say(f"{made['files']} scan files written to {scans}")
    key = json.loads((scans / ".ground-truth.json").read_text())["key"]
    # R-OMR-1: the recognition system is tested on a deck with known markings before live reading.
    trial = run_trial(db, subject_code, actor_id=people["tech1"], synthetic=4, seed=seed)
    if not trial.passed:
        raise RuntimeError(f"trial run {trial.trial_id} of {subject_code} failed: {', '.join(trial.failed_cards)}")
    say(f"trial run {trial.trial_id}: {len(trial.cards)} synthetic cards read correctly by both methods "
        f"(tech1; template {trial.template_hash[:12]}…, settings {trial.settings_hash[:12]}…)")
    report = ingest_path(db, settings, scans, subject_code, scanner_id="demo-scanner-1", actor_id=people["tech1"])
    say(f"batch {report.batch_code}: {report.accepted} pages accepted, {report.rejected} rejected, "
        f"{report.duplicates} duplicate")
    store = open_store(settings)
    if processes:
        # Two nodes as two OS processes: the same code path as a real two-machine install.
        procs = spawn_nodes(settings.database_url, settings.image_store, ("omr-a", "omr-b"), exit_when_idle=True)
        codes = [p.wait(600) for p in procs]
        if any(codes):
            raise RuntimeError(f"OMR nodes exited with {codes}")
    else:
        # In-process fallback: still two named nodes, UNIQUE(card, node) still applies.
        import threading
        workers = [Worker(db, store, n, exit_when_idle=True, poll_seconds=0.05) for n in ("omr-a", "omr-b")]
        threads = [threading.Thread(target=w.run) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    settled = batches.settle_batch(db, report.batch_id, actor_id=people["tech1"])
    say(f"double read done: {settled['assigned_cards']} cards assembled into scripts, "
        f"{settled['responses_created']} item images ready for marking, {settled['open_exceptions']} exceptions "
        "for the technicians (tech1 proposes, tech2 confirms)")
    entered = answer_keys.enter_key(db, subject_code, people["keyofficer"], key)
    answer_keys.sign_key(db, entered.id, people["reviewer"], "reviewer")
    answer_keys.sign_key(db, entered.id, people["authority"], "authority_officer")
    locked = answer_keys.lock_key(db, entered.id, people["authority"])
    say(f"answer key v{locked['version']} entered by keyofficer, signed by reviewer and authority, locked "
        f"({locked['locked_hash'][:12]}…)")
    scored = answer_keys.score_subject(db, subject_code, actor_id=people["authority"])
    sample = spotcheck.sample_spot_check(db, subject_code, actor_id=people["authority"])
    say(f"objective scores: {scored['scored']} scripts; spot-check sample of {len(sample['sample'])} cards drawn")
    return {"trial": {k: v for k, v in trial.as_dict().items() if k != "cards"},
            "batch": report.as_dict() | {"new_cards": None}, "settled": settled, "key": locked, "scored": scored,
            "spot_check": sample, "seconds": round(time.monotonic() - started, 1)}
