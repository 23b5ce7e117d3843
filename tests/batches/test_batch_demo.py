"""The demo batch (small): artefacts become exceptions, the rest is read, assembled, keyed, scored."""
from __future__ import annotations

from pathlib import Path

from marking import batches, examspec
from marking.models import User, UserRole

from tests.batches.conftest import FAST_HASH

SPEC = Path(__file__).resolve().parents[2] / "examples" / "exam-2026-10.yaml"


def test_demo_batch_small(db, settings, tmp_path):
    from omr.demo_batch import run_demo_batch
    examspec.import_spec(db, SPEC)
    with db.write() as s:
        for name, role in (("keyofficer", "key_officer"), ("reviewer", "key_officer"),
                           ("authority", "authority_officer"), ("tech1", "technician")):
            u = User(username=name, display_name=name, password_hash=FAST_HASH)
            u.roles = [UserRole(role=role)]
            s.add(u)
    result = run_demo_batch(db, settings, n_cards=12, out_dir=tmp_path / "scans", processes=False,
                            say=lambda *_: None)
    assert result["trial"]["passed"] and result["trial"]["cards_read"] == 4   # R-OMR-1: trial before live reading
    assert result["batch"]["accepted"] == 12 and result["batch"]["duplicates"] == 1
    assert result["batch"]["rejected"] == 1
    reasons = {e.reason for e in batches.list_exceptions(db)}
    assert any("faint_mark" in r for r in reasons) and any("erasure" in r for r in reasons)
    assert any("candidate_not_on_roll" in r or r == "unknown_candidate" for r in reasons)
    assert result["scored"]["scored"] >= 8 and result["key"]["version"] == 1
    assert len(result["spot_check"]["sample"]) == result["spot_check"]["population"]
