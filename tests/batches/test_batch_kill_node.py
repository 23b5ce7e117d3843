"""kill -9 of one OMR node mid-batch, with real processes, on SQLite and PostgreSQL (R-OMR-3).

Every card still ends with exactly two accepted reads from two different nodes; no read
is lost; the killed node's unfinished lease is recycled and its stale result can never
be accepted (fencing).
"""
from __future__ import annotations

import os
import signal
import time

from sqlalchemy import func, select

from marking import omr_queue
from marking.models import Card, OmrRead
from omr.ingest import ingest_path
from omr.worker import spawn_nodes, stop_nodes

from tests.batches.batch_helpers import write_cards

FAST = ["--lease-seconds", "2", "--heartbeat-seconds", "0.5", "--poll-seconds", "0.1", "--claim-batch", "1"]


def _wait(predicate, timeout=90.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_kill_one_node_mid_batch(db, db_url, settings, world, store, tmp_path):
    write_cards(tmp_path / "scans", world.roll, 10)
    ingest_path(db, settings, tmp_path / "scans", world.subject_code, store=store)
    logs = tmp_path / "logs"
    logs.mkdir()
    slow = FAST + ["--read-delay", "0.3"]
    node_a, node_b = spawn_nodes(db_url, store.root, ("omr-a",), extra_args=slow, log_dir=logs) + \
        spawn_nodes(db_url, store.root, ("omr-b",), extra_args=slow, exit_when_idle=True, log_dir=logs)
    try:
        def a_is_mid_read():
            with db.read() as s:
                done = s.scalar(select(func.count()).select_from(OmrRead).where(OmrRead.node == "omr-a",
                                                                                OmrRead.status == "done"))
                leased = s.scalar(select(func.count()).select_from(OmrRead).where(OmrRead.node == "omr-a",
                                                                                  OmrRead.status == "leased"))
            return done >= 2 and leased >= 1
        _wait(a_is_mid_read)
        os.kill(node_a.pid, signal.SIGKILL)          # kill -9 while it holds a lease
        node_a.wait(10)
        with db.read() as s:
            orphaned = [r.id for r in s.execute(select(OmrRead).where(OmrRead.node == "omr-a",
                                                                      OmrRead.status == "leased")).scalars()]
        assert orphaned
        # omr-b alone cannot finish: reads of cards it read first wait for a second node
        status = _wait(lambda: (lambda st: st if st["waiting_for_second_node"] else None)(
            omr_queue.queue_status(db, stale_seconds=3)), timeout=60)
        assert "second node" in status["message"]
        # the node comes back under the same stable name; its expired lease is recycled
        restarted = spawn_nodes(db_url, store.root, ("omr-a",), extra_args=FAST, exit_when_idle=True, log_dir=logs)
        for proc in restarted + [node_b]:
            assert proc.wait(120) == 0
    finally:
        stop_nodes([node_a, node_b])

    with db.read() as s:
        reads = s.execute(select(OmrRead)).scalars().all()
        cards = s.execute(select(Card)).scalars().all()
    assert len(cards) == 10 and len(reads) == 20
    assert all(r.status == "done" for r in reads), [(r.id, r.status) for r in reads if r.status != "done"]
    by_card: dict[int, list[OmrRead]] = {}
    for r in reads:
        by_card.setdefault(r.card_id, []).append(r)
    for card_id, pair in by_card.items():
        assert sorted(r.read_no for r in pair) == [1, 2]
        assert len({r.node for r in pair}) == 2          # two different nodes
    recycled = [r for r in reads if r.id in orphaned]
    assert all(r.attempts >= 2 for r in recycled)        # taken over after the lease expired
    assert all(c.status == "agreed" for c in cards)


def test_sigterm_stops_a_node_gracefully(db, db_url, world, store, tmp_path):
    from marking.models.scanning import OmrNode
    [node] = spawn_nodes(db_url, store.root, ("omr-g",), extra_args=FAST, log_dir=tmp_path)
    _wait(lambda: omr_queue.queue_status(db)["alive"] == ["omr-g"])
    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0
    with db.read() as s:
        assert s.get(OmrNode, "omr-g").state == "stopped"
    assert omr_queue.queue_status(db)["nodes"][0]["state"] == "stopped"
