"""End to end: ingest → two reads on two nodes → compare → assemble → key → score → spot check → BagIt."""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import func, select

from marking import answer_keys, archive, batches, spotcheck
from marking.models import Card, OmrRead, OutboxEvent, PageImage, Response, Script, MarkTask
from marking.omr_compare import canonical
from omr.ingest import ingest_path

from tests.batches.batch_helpers import KEY, run_nodes_inline, sign_and_lock, write_cards


def test_batch_end_to_end(db, settings, world, store, tmp_path):
    folder = tmp_path / "scans"
    truths = write_cards(folder, world.roll, 4)
    (folder / "zz-notes.txt").write_text("not a scan")                       # bad file: rejected, batch goes on
    (folder / "scan-0001-again.jpg").write_bytes((folder / "scan-0001.jpg").read_bytes())  # duplicate
    data = (folder / "scan-0002.jpg").read_bytes()
    (folder / "scan-0099-truncated.jpg").write_bytes(data[: len(data) // 2])  # truncated: rejected
    events = []
    report = ingest_path(db, settings, folder, world.subject_code, scanner_id="S1", progress=events.append, store=store)
    assert (report.accepted, report.duplicates, report.rejected) == (4, 1, 2)
    reasons = sorted(r["reason"].split(":")[0] for r in report.rejects)
    assert reasons == ["truncated_image", "unsupported_file"]
    assert events and events[-1]["done"]
    with db.read() as s:
        batch_row = s.execute(select(PageImage.status, func.count()).group_by(PageImage.status)).all()
        assert dict(batch_row) == {"accepted": 4, "duplicate": 1, "rejected": 2}
        assert s.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.topic == f"batch:{report.batch_id}")) > 0
    assert store.verify(report.manifest_sha256)
    manifest = json.loads(store.get(report.manifest_sha256))
    assert len(manifest["files"]) == 7

    workers = run_nodes_inline(db, store)
    assert sum(w.done for w in workers) == 8
    with db.read() as s:
        # R-OMR-3: exactly two reads per card, from two different nodes
        for card_id, nodes in s.execute(select(OmrRead.card_id, func.count(func.distinct(OmrRead.node)))
                                        .where(OmrRead.status == "done").group_by(OmrRead.card_id)).all():
            assert nodes == 2
        statuses = dict(s.execute(select(Card.status, func.count()).group_by(Card.status)).all())
    assert statuses == {"agreed": 4}, batches.list_exceptions(db)

    result = batches.settle_batch(db, report.batch_id)
    assert result["assigned_cards"] == 4 and result["responses_created"] == 8
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Script)) == 4
        assert s.scalar(select(func.count()).select_from(MarkTask)) >= 8
        responses = s.execute(select(Response)).scalars().all()
        flagged = {json.loads(r.preflags).count("near_empty") for r in responses}
        assert flagged == {0, 1}   # item 11 has writing, item 12 is empty: pre-flagged, never auto-zero
        assert all(r.status == "pending" and r.final_num is None for r in responses)
        assert all(store.exists(r.image_sha256) for r in responses)
    recon = batches.reconcile(db, world.subject_code)
    assert recon["received"] == 4 and len(recon["missing"]) == len(world.roll) - 4
    assert recon["duplicate_pages"] == 1 and recon["rejected_pages"] == 2

    sign_and_lock(db, world)
    scored = answer_keys.score_subject(db, world.subject_code, actor_id=world.users["keyofficer"])
    assert scored["scored"] == 4
    with db.read() as s:
        by_cand = {}
        for script in s.execute(select(Script)).scalars():
            from marking.models import Candidate
            by_cand[s.get(Candidate, script.candidate_id).candidate_no] = script.objective_cp
    for cand, truth in truths.items():
        expected = sum(answer_keys.score_item(
            {"answer": KEY[c], "points_cp": 100 if int(c) <= 8 else 200,
             "kind": "single" if int(c) <= 8 else "multiple", "multi_rule": "partial_subset", "partial_cp": 100},
            truth.answers[c]) for c in KEY)
        assert by_cand[cand] == expected

    sample = spotcheck.sample_spot_check(db, world.subject_code, actor_id=world.users["authority"])
    assert len(sample["sample"]) == 4   # fewer than 20 cards: all of them
    again = spotcheck.sample_spot_check(db, world.subject_code, actor_id=world.users["authority"])
    assert again["sample"] == sample["sample"]   # reproducible
    spotcheck.record_spot_check(db, sample["sample"][0], world.users["authority"], "confirmed")

    bag = archive.export_bag(db, world.subject_code, tmp_path / "export", store=store, include_images=True)
    check = archive.verify_export(bag)
    assert check.ok, check.problems
    text = (bag / "data" / "scripts.csv").read_text()
    assert world.roll[0] in text
    # R-OMR-1 evidence is part of the record: the trial run the batch was created under,
    # with the very report that was recorded (its hash recomputes)
    trials = json.loads((bag / "data" / "trial_runs.json").read_text())["trial_runs"]
    assert [(t["passed"], t["run_by"], t["cards_read"]) for t in trials] == [(True, "tech1", 1)]
    assert hashlib.sha256(canonical(trials[0]["report"]).encode()).hexdigest() == trials[0]["report_sha256"]
    batch_docs = json.loads((bag / "data" / "batches.json").read_text())["batches"]
    assert [b["trial_run_id"] for b in batch_docs] == [trials[0]["id"]]
    with open(bag / "data" / "scripts.csv", "a") as handle:
        handle.write("999999999999,forged,0,30,1\n")
    check = archive.verify_export(bag)
    assert not check.ok and any("scripts.csv" in p for p in check.problems)
