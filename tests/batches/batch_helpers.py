"""Shared steps for the batch tests."""
from __future__ import annotations

import argparse
import threading

from marking import cli_commands
from omr import batch_cli
from omr.template import load_template
from omr.worker import Worker

from tests.batches.batch_cards import scan, small_template

ANSWERS = [
    {"1": "A", "2": "B", "3": "C", "4": "D", "5": "A", "6": "B", "7": "", "8": "C", "9": "AC", "10": "BDE"},
    {"1": "B", "2": "B", "3": "C", "4": "A", "5": "A", "6": "C", "7": "D", "8": "C", "9": "A", "10": "BD"},
    {"1": "A", "2": "C", "3": "C", "4": "D", "5": "B", "6": "B", "7": "A", "8": "", "9": "ACD", "10": "E"},
]
KEY = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "A", "6": "B", "7": "D", "8": "C", "9": "AC", "10": "BD"}


def write_cards(folder, roll, n, *, template_body=None, start=0, writing=("11",)):
    """n filled cards for roll[start:start+n] as JPEG files; returns truths by candidate."""
    folder.mkdir(parents=True, exist_ok=True)
    template = load_template(template_body or small_template())
    truths = {}
    for i in range(n):
        cand = roll[start + i]
        data, truth = scan(template, ANSWERS[i % len(ANSWERS)], candidate=cand, seed=100 + start + i, fmt="jpeg",
                           writing=list(writing))
        (folder / f"scan-{start + i:04d}.jpg").write_bytes(data)
        truths[cand] = truth
    return truths


def run_nodes_inline(db, store, nodes=("omr-a", "omr-b")):
    """Two nodes as two threads of this process (functional tests; the kill test uses processes)."""
    workers = [Worker(db, store, n, exit_when_idle=True, poll_seconds=0.05, idle_grace=0.3) for n in nodes]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return workers


def sign_and_lock(db, world, answers=None):
    from marking import answer_keys
    key = answer_keys.enter_key(db, world.subject_code, world.users["keyofficer"], answers or KEY)
    answer_keys.sign_key(db, key.id, world.users["reviewer"], "reviewer")
    answer_keys.sign_key(db, key.id, world.users["authority"], "authority_officer")
    return answer_keys.lock_key(db, key.id, world.users["keyofficer"])


def trial_deck(folder, roll, *, n: int = 2, wrong_card: int | None = None, as_typed: bool = False) -> list[dict]:
    """n scanned test cards written to ``folder`` and their expected-answers entries
    (R-OMR-1 trial decks); ``wrong_card``'s item 3 is deliberately given a wrong expected
    answer. ``as_typed``: options in lower case and reverse order, as a technician might
    type them (the same sets)."""
    truths = write_cards(folder, roll, n)
    cards = []
    for i in range(n):
        truth = truths[roll[i]]
        answers = dict(truth.answers)
        if i == wrong_card:
            answers["3"] = "D" if answers["3"] != "D" else "A"
        if as_typed:
            answers = {k: v[::-1].lower() for k, v in answers.items()}
        cards.append({"file": f"scan-{i:04d}.jpg", "page": truth.page, "candidate_number": truth.candidate_number,
                      "subject_code": truth.subject_code, "absent": truth.absent, "answers": answers})
    return cards


def run_cli(ctx, *argv) -> int:
    """One ``marking-centre`` command (the batch and marking subcommands) with ``ctx``;
    returns its exit code."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cli_commands.register(sub)
    batch_cli.register(sub)
    args = parser.parse_args(argv)
    return args.handler(args, ctx)


def erasure_trial_deck(folder, roll, doubts) -> list[dict]:
    """Two scanned test cards written to ``folder`` and their expected-answers entries; the
    first card has a half-erased mark on item 2 beside its real answer (a deliberate
    doubt), declared as that entry's ``doubts`` unless ``doubts`` is None."""
    from omr.synthetic import Special
    template = load_template(small_template())
    folder.mkdir(parents=True)
    cards = []
    for i in range(2):
        answers = ANSWERS[i]
        erased = next(o for o in "ABCD" if o not in answers["2"])
        specials = [Special("erasure", "2", erased, 0.3)] if i == 0 else []
        data, truth = scan(template, answers, candidate=roll[i], seed=100 + i, fmt="jpeg", specials=specials)
        (folder / f"scan-{i:04d}.jpg").write_bytes(data)
        entry = {"file": f"scan-{i:04d}.jpg", "page": truth.page, "candidate_number": truth.candidate_number,
                 "subject_code": truth.subject_code, "absent": truth.absent, "answers": truth.answers}
        if i == 0 and doubts is not None:
            entry["doubts"] = doubts
        cards.append(entry)
    return cards
