"""R-OMR-1 trial run: test the recognition system on a deck with known markings.

Before live reading, a deck of answer cards whose true markings are known is read by
both recognition methods — exactly as the batch pipeline reads a card
(:func:`omr.batch_adapter.read` with the subject's frozen template, recognition version
and settings) — and every read field and question is compared with the truth. The
trial passes only when every card is read correctly by both methods: no difference
from the truth, no flag or uncertain bubble (an unexpected doubt), and the two reads
agree as :func:`marking.omr_compare.compare` would decide for a live card. A scanned
deck may also carry deliberate doubts (a half-erased answer, a mark too faint to call,
two marks on a single-choice question) declared as ``doubts`` in its expected answers:
then each method must flag each of those items, so the card would go to people
(R-OMR-7) — a doubt the system misses fails the trial too. Otherwise it fails and names
each card and field that differed. The result is recorded by
:func:`marking.trials.record_trial_run` (table ``omr_trial_run`` plus a ledger entry);
``marking.batches.create_batch`` refuses a batch without a passed trial.

The deck is either

* **scans**: a folder of scanned test cards (PNG/JPEG/TIFF/PDF, as ingest takes them)
  plus an expected-answers JSON file (:func:`load_expected`), or
* **synthetic**: cards rendered from the template with known random markings
  (:func:`synthetic_deck`, using :mod:`omr.synthetic`), for the demo and tests.

Trial reads are made without the roll (test decks carry test candidate numbers); the
candidate number is compared with the truth instead.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from marking import trials
from marking.batches import BatchError
from marking.omr_compare import compare, summarise

from . import batch_adapter as adapter
from .template import Template

Progress = Callable[[dict[str, Any]], None]
METHODS = ("a", "b")
# Darkness of a synthetic deck's deliberate erasure, as a share of a full mark: at
# 30–35 % both methods flagged it on every one of 260 seeded cards (100 and 150 dpi);
# fainter residue is not flagged every time, and a trial must not fail by chance.
DOUBT_RESIDUE = 0.35


@dataclass
class TrialCard:
    """One card of a trial deck: its image bytes and what is truly marked on it."""
    name: str
    data: bytes | None
    truth: dict[str, Any]           # page, candidate_number, subject_code, absent, answers
    reject: str | None = None       # the file could not be taken as a page at all


@dataclass
class TrialReport:
    subject: str
    source: str
    template_hash: str
    recognition_version: str
    settings_hash: str
    cards: list[dict[str, Any]] = field(default_factory=list)
    trial_id: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.cards) and not any(c["mismatches"] for c in self.cards)

    @property
    def mismatches(self) -> int:
        return sum(len(c["mismatches"]) for c in self.cards)

    @property
    def declared_doubts(self) -> int:
        """Deliberate doubts the deck declared (each checked to be flagged by both methods)."""
        return sum(len(c.get("doubts") or []) for c in self.cards)

    @property
    def failed_cards(self) -> list[str]:
        return [c["card"] for c in self.cards if c["mismatches"]]

    def as_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "subject": self.subject, "source": self.source,
                "template_hash": self.template_hash, "recognition_version": self.recognition_version,
                "settings_hash": self.settings_hash, "cards_read": len(self.cards), "mismatches": self.mismatches,
                "failed_cards": self.failed_cards, "passed": self.passed, "cards": self.cards}


# --------------------------------------------------------------------------- decks

def synthetic_deck(template: Template, n: int, *, subject_code: str, seed: int = 1, dpi: float = 150) -> list[TrialCard]:
    """``n`` cards rendered from the template with known random markings (omr.synthetic).

    Cards cycle through the template's pages; identity pages get a valid random
    candidate number and the subject code. Scans are mildly realistic (small skew,
    noise, slight blur, JPEG). Every second card with an answered single-choice item
    (the 2nd, 4th, …) also carries one deliberate doubt: erasure residue beside the
    answer (:data:`DOUBT_RESIDUE` of full darkness), declared in its truth, which both
    methods must flag (R-OMR-7); any other doubt the reader raises counts against the trial.
    """
    from .synthetic import ScanParams, Special, random_answers, random_candidate_number, scan_card
    if n < 1:
        raise BatchError("a synthetic trial deck needs at least one card")
    rng = np.random.default_rng(seed)
    deck = []
    with_singles = 0
    for i in range(n):
        page = template.pages[i % len(template.pages)]
        answers = random_answers(template, rng, page=page.code)
        number = random_candidate_number(rng) if page.candidate_number else None
        params = ScanParams(rotation_deg=float(rng.uniform(-1.0, 1.0)), noise_sigma=2.0,
                            blur_sigma=float(rng.uniform(0, 0.4)))
        singles = [q for q, a in answers.items() if len(a) == 1 and template.objective_items[q]["kind"] == "single"]
        specials = []
        if singles:
            with_singles += 1
            if with_singles % 2 == 0:
                q = singles[int(rng.integers(len(singles)))]
                free = [o for o in template.objective_items[q]["options"] if o not in answers[q]]
                specials.append(Special("erasure", q, free[int(rng.integers(len(free)))], DOUBT_RESIDUE))
        data, truth = scan_card(template, answers, params, seed=int(rng.integers(1 << 31)), dpi=dpi, fmt="jpeg",
                                quality=90, page=page.code, candidate_number=number,
                                subject_code=subject_code if page.subject_code else None, barcode=True,
                                specials=specials)
        deck.append(TrialCard(f"trial-{i + 1:04d}", data, {
            "page": truth.page, "candidate_number": truth.candidate_number, "subject_code": truth.subject_code,
            "absent": truth.absent, "answers": truth.answers, "doubts": [s.item for s in specials]}))
    return deck


def load_expected(path: str | Path) -> dict[str, dict[str, Any]]:
    """The expected-answers file of a scanned trial deck, by card name.

    JSON: ``{"cards": [{"file": "card-01.jpg", "page": 1, "candidate_number":
    "450126100042", "subject_code": "00015", "absent": false, "answers": {"1": "A",
    "2": "", "26": "AC", …}, "doubts": ["7"]}, …]}``. ``file`` is the path relative to
    the deck folder; a page of a PDF or multi-page TIFF is ``"file.pdf#2"``. ``answers``
    must name every objective item on the card's page ("" = left blank). ``doubts``
    (optional) names the items carrying a deliberately unclear mark, which both methods
    must flag; their ``answers`` entries are not compared (a person decides those).
    """
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BatchError(f"{path}: not valid JSON ({exc})") from None
    entries = body.get("cards") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise BatchError(f"{path}: expected {{\"cards\": [...]}} with at least one card")
    out: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BatchError(f"{path}: cards[{n}] needs a \"file\"")
        if not isinstance(entry.get("answers"), dict):
            raise BatchError(f"{path}: cards[{n}] ({entry['file']}) needs \"answers\"")
        if entry["file"] in out:
            raise BatchError(f"{path}: card {entry['file']} is listed twice")
        out[entry["file"]] = entry
    return out


def scanned_deck(cards_dir: str | Path, expected_file: str | Path, template: Template) -> list[TrialCard]:
    """The technician's scanned test cards matched with their expected answers."""
    from .ingest import list_files
    root = Path(cards_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of scanned test cards")
    expected = load_expected(expected_file)
    deck: list[TrialCard] = []
    for file in list_files(root):
        if not adapter.supported(file):
            continue
        name = str(file.relative_to(root))
        container, pages = adapter.explode(file.read_bytes())
        for page in pages:
            key = f"{name}#{page.page_no}" if container else name
            if key not in expected:
                raise BatchError(f"{key}: no expected answers for this card in {expected_file}")
            truth = _check_truth(key, expected.pop(key), template)
            deck.append(TrialCard(key, page.data, truth, page.reject))
    if expected:
        raise BatchError(f"expected answers name cards that are not in {root}: {', '.join(sorted(expected))}")
    if not deck:
        raise BatchError(f"no card images in {root}")
    return deck


def _check_truth(name: str, entry: dict[str, Any], template: Template) -> dict[str, Any]:
    page_code = int(entry.get("page", template.pages[0].code))
    try:
        pg = template.page(page_code)
    except Exception:  # noqa: BLE001 - the template names its pages
        raise BatchError(f"{name}: page {page_code} is not a page of template {template.id}") from None
    options = {c: block.options for block in pg.objective_blocks for c in block.codes}
    codes = list(options)
    answers = {str(k): str(v or "").upper() for k, v in entry["answers"].items()}
    missing = [c for c in codes if c not in answers]
    extra = sorted(set(answers) - set(codes))
    if missing or extra:
        raise BatchError(f"{name}: expected answers must name exactly the objective items of page {page_code}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; not on the page {', '.join(extra)}" if extra else ""))
    for code in codes:
        if set(answers[code]) - set(options[code]) or len(set(answers[code])) != len(answers[code]):
            raise BatchError(f"{name}: item {code}: {answers[code]!r} is not a set of the options {options[code]}")
        answers[code] = "".join(o for o in options[code] if o in answers[code])   # the reader's order
    doubts = entry.get("doubts", [])
    if not isinstance(doubts, list) or not all(isinstance(d, (str, int)) for d in doubts):
        raise BatchError(f"{name}: \"doubts\" must be a list of item codes")
    doubts = [str(d) for d in doubts]
    strange = sorted(set(doubts) - set(codes))
    if strange or len(set(doubts)) != len(doubts):
        raise BatchError(f"{name}: \"doubts\" must name objective items of page {page_code}, each once"
                         + (f"; not on the page {', '.join(strange)}" if strange else ""))
    for field_, present in (("candidate_number", pg.candidate_number), ("subject_code", pg.subject_code)):
        if present and field_ not in entry:
            raise BatchError(f"{name}: expected answers need \"{field_}\" (null if left blank)")

    def text(key: str, present: Any) -> str | None:
        value = entry.get(key) if present else None
        return None if value in (None, "") else str(value)

    return {"page": page_code, "candidate_number": text("candidate_number", pg.candidate_number),
            "subject_code": text("subject_code", pg.subject_code),
            "absent": bool(entry.get("absent", False)), "answers": {c: answers[c] for c in codes},
            "doubts": [c for c in codes if c in doubts]}


# --------------------------------------------------------------------------- comparison

def check_card(card: TrialCard, template: Template, subject_code: str) -> list[dict[str, Any]]:
    """Every way in which the two reads of this card differ from its truth (empty = correct)."""
    if card.data is None:
        return [{"method": "-", "field": "file", "expected": "a readable page", "read": card.reject}]
    truth = card.truth
    doubts = set(truth.get("doubts") or ())
    out: list[dict[str, Any]] = []
    results = {}
    for method in METHODS:
        result, _text = adapter.read(card.data, template, method, expected_subject=subject_code)
        results[method] = result
        summary = summarise(result)
        if "error" in summary:
            out.append({"method": method, "field": "status", "expected": "ok", "read": summary["error"]})
            continue
        for field_ in ("page", "candidate_number", "subject_code", "absent"):
            if summary[field_] != truth[field_]:
                out.append({"method": method, "field": field_, "expected": truth[field_], "read": summary[field_]})
        objective = result.get("objective") or {}
        flags = result.get("flags") or []
        flagged = {f.get("item") for f in flags}
        for code, want in truth["answers"].items():
            q = objective.get(code)
            got = "".join(q.get("chosen") or []) if q else None
            if code in doubts:   # a deliberate doubt: it must go to people, whatever was read
                if code not in flagged:
                    out.append({"method": method, "field": "doubt", "item": code, "expected": "a doubt",
                                "read": got})
                continue
            want_state = "blank" if not want else ("single" if len(want) == 1 else "multiple")
            if q is None or got != want or q.get("state") != want_state:
                out.append({"method": method, "field": "item", "item": code, "expected": want, "read": got,
                            "state": q.get("state") if q else None})
            elif q.get("uncertain"):
                out.append({"method": method, "field": "item", "item": code, "expected": want, "read": got,
                            "doubt": "uncertain " + "".join(q["uncertain"])})
        for flag in flags:
            if flag.get("item") not in doubts:
                out.append({"method": method, "field": "flag", "item": flag.get("item"), "expected": None,
                            "read": flag.get("code")})
    if not out and not doubts:   # with deliberate doubts the card goes to people: that is the test
        agreed, diffs, _flags = compare(results["a"], results["b"])
        if not agreed:   # both right yet not agreed would be a comparison fault: never pass it
            out.append({"method": "a+b", "field": "agreement", "expected": "agreed", "read": diffs})
    return out


def describe(card: str, m: dict[str, Any]) -> str:
    """One mismatch as a line for people."""
    where = f"item {m['item']}" if m.get("item") else m["field"].replace("_", " ")
    if m["field"] == "doubt":
        return (f"{card}: method {m['method']} did not flag {where} (read {m['read']!r}), "
                "which the deck marks as a deliberate doubt")
    if m["field"] == "flag":
        return f"{card}: method {m['method']} raised {m['read']}" + (f" on item {m['item']}" if m.get("item") else "")
    if m.get("doubt"):
        return f"{card}: method {m['method']} doubted {where} ({m['doubt']}; expected {m['expected']!r})"
    return f"{card}: method {m['method']} read {where} as {m['read']!r}, expected {m['expected']!r}"


# --------------------------------------------------------------------------- the run

@dataclass
class PreparedTrial:
    """A trial deck ready to be read: checked arguments, the subject's template, the cards."""
    subject: str
    template: Template
    source: str
    deck: list[TrialCard]
    started: dt.datetime


def prepare_trial(db, subject_code: str, *, actor_id: int, cards_dir: str | Path | None = None,
                  expected_file: str | Path | None = None, synthetic: int | None = None, seed: int = 1,
                  dpi: float = 150) -> PreparedTrial:
    """Everything of a trial run before the reading: the technician check, the subject's
    template and the deck (a bad deck or expected-answers file is refused here, before
    any card is read and before anything is recorded). The cards hold their bytes, so
    ``cards_dir`` may be removed once this returns."""
    if (cards_dir is None) != (expected_file is None):
        raise BatchError("a scanned trial deck needs both the cards folder and the expected-answers file")
    if cards_dir is not None and synthetic is not None:
        raise BatchError("give either scanned test cards or a synthetic deck size, not both")
    started = dt.datetime.now(dt.timezone.utc)
    code, body, frozen_hash = trials.subject_template(db, subject_code, actor_id)
    template = adapter.load_batch_template(body, frozen_hash)
    if cards_dir is not None:
        source, deck = "scans", scanned_deck(cards_dir, expected_file, template)
    else:
        size = 4 if synthetic is None else synthetic
        source, deck = "synthetic", synthetic_deck(template, size, subject_code=code, seed=seed, dpi=dpi)
    return PreparedTrial(code, template, source, deck, started)


def read_trial(db, prepared: PreparedTrial, *, actor_id: int, progress: Progress | None = None) -> TrialReport:
    """Read a prepared deck by both methods, compare with the truth, record (R-OMR-1)."""
    template, code = prepared.template, prepared.subject
    report = TrialReport(code, prepared.source, template.content_hash, adapter.RECOGNITION_VERSION,
                         adapter.SETTINGS_HASH)
    deck = prepared.deck
    for n, card in enumerate(deck, start=1):
        mismatches = check_card(card, template, code)
        doubts = card.truth.get("doubts") or []
        report.cards.append({"card": card.name, "mismatches": mismatches, **({"doubts": doubts} if doubts else {})})
        if progress:
            progress({"card": card.name, "done": n, "total": len(deck), "ok": not mismatches})
    record = trials.record_trial_run(db, code, template_hash=report.template_hash,
                                     recognition_version=report.recognition_version,
                                     settings_hash=report.settings_hash, source=prepared.source, cards=report.cards,
                                     actor_id=actor_id, started_at=prepared.started)
    report.trial_id = record.id
    return report


def run_trial(db, subject_code: str, *, actor_id: int, cards_dir: str | Path | None = None,
              expected_file: str | Path | None = None, synthetic: int | None = None, seed: int = 1,
              dpi: float = 150, progress: Progress | None = None) -> TrialReport:
    """Read a trial deck with the live recognition system, compare, record (R-OMR-1)."""
    prepared = prepare_trial(db, subject_code, actor_id=actor_id, cards_dir=cards_dir, expected_file=expected_file,
                             synthetic=synthetic, seed=seed, dpi=dpi)
    return read_trial(db, prepared, actor_id=actor_id, progress=progress)
