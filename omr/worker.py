"""The long-lived OMR worker process (one per node; architecture.md §2, R-OMR-3).

``python -m omr.worker --node omr-a`` (or ``marking-centre omr-worker --node omr-a``):

* ``cv2.setNumThreads(1)``: one core per process; OpenCV's own pool oversubscribes.
* ``--node`` is a stable configured name, not a PID: a restarted process is the same
  machine and never gets the second read of a card it read first.
* Loop: claim (fenced lease) → image bytes from the store → ``read_card`` with the
  read's method (read 1 "a", read 2 "b") using the batch's frozen template → complete
  only while the lease token is current; read 1 also cuts the anonymous item clips.
* A heartbeat thread renews held leases and the node's "last seen" while it works.
* SIGTERM/SIGINT: finish the current read, hand back unstarted leases, mark the node
  stopped, exit 0. SIGKILL: the leases expire and other nodes take them over.
* ``spawn_nodes()`` starts two local nodes as two processes (one-machine install).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2

from marking import omr_queue
from marking.db import Database
from marking.models import CardTemplate, Candidate, Registration, ScanBatch, Subject
from marking.storage import LocalImageStore, StorageError
from sqlalchemy import select

from . import batch_adapter as adapter

log = logging.getLogger("omr.worker")


@dataclass
class BatchContext:
    template: Any
    roll: frozenset[str]
    subject_code: str
    frozen_ok: bool
    problem: str | None


class Worker:
    def __init__(self, db: Database, store, node: str, *, lease_seconds: int = 60, heartbeat_every: float = 10.0,
                 poll_seconds: float = 0.5, claim_batch: int = 4, exit_when_idle: bool = False,
                 idle_grace: float = 2.0, max_reads: int | None = None, read_delay: float = 0.0):
        self.db, self.store, self.node = db, store, node
        self.lease_seconds, self.heartbeat_every, self.poll_seconds = lease_seconds, heartbeat_every, poll_seconds
        self.claim_batch, self.exit_when_idle, self.idle_grace = claim_batch, exit_when_idle, idle_grace
        self.max_reads, self.read_delay = max_reads, read_delay
        self.stopping = threading.Event()
        self._held: dict[str, omr_queue.Lease] = {}
        self._held_lock = threading.Lock()
        self._contexts: dict[int, BatchContext] = {}
        self.done = self.discarded = 0

    # -- batch context (frozen template, roll) --
    def context(self, batch_id: int) -> BatchContext:
        ctx = self._contexts.get(batch_id)
        if ctx is not None:
            return ctx
        with self.db.read() as session:
            batch = session.get(ScanBatch, batch_id)
            body = session.get(CardTemplate, batch.card_template_id).body
            subject = session.get(Subject, batch.subject_id)
            roll = frozenset(session.execute(
                select(Candidate.candidate_no).join(Registration, Registration.candidate_id == Candidate.id)
                .where(Registration.subject_id == subject.id)).scalars())
            frozen = (batch.template_hash, batch.settings_hash, batch.recognition_version)
        problem = None
        template = None
        try:
            template = adapter.load_batch_template(body, frozen[0])
        except adapter.TemplateMismatch as exc:
            problem = str(exc)
        if problem is None and frozen[1] != adapter.SETTINGS_HASH:
            problem = f"R-OMR-1: this node's recognition settings {adapter.SETTINGS_HASH[:12]} differ from the batch's {frozen[1][:12]}"
        if problem is None and frozen[2] != adapter.RECOGNITION_VERSION:
            problem = f"R-OMR-1: this node runs {adapter.RECOGNITION_VERSION}, the batch is frozen on {frozen[2]}"
        ctx = BatchContext(template, roll, subject.code, problem is None, problem)
        self._contexts[batch_id] = ctx
        return ctx

    # -- heartbeats --
    def _heartbeat_loop(self) -> None:
        last_touch = 0.0
        while not self.stopping.wait(min(self.heartbeat_every, 2.0)):
            try:
                with self._held_lock:
                    leases = list(self._held.values())
                if leases:
                    held = omr_queue.heartbeat(self.db, leases, lease_seconds=self.lease_seconds)
                    with self._held_lock:
                        for tok in [t for t in self._held if t not in held]:
                            self._held.pop(tok, None)
                if time.monotonic() - last_touch >= self.heartbeat_every / 2:
                    omr_queue.touch_node(self.db, self.node)
                    last_touch = time.monotonic()
            except Exception:  # noqa: BLE001 - a missed heartbeat only risks a lease expiring
                log.exception("heartbeat failed")

    # -- one read --
    def read_one(self, lease: omr_queue.Lease) -> tuple[str, list[dict[str, Any]]] | None:
        """(result JSON, clips) or None when the read was handed back as failed."""
        ctx = self.context(lease.batch_id)
        if not ctx.frozen_ok:
            log.error("refusing batch %s: %s", lease.batch_id, ctx.problem)
            omr_queue.fail(self.db, lease, ctx.problem or "frozen settings mismatch", retry=False)
            return None
        try:
            data = self.store.get(lease.page_sha256)
        except StorageError as exc:
            omr_queue.fail(self.db, lease, f"image unavailable: {exc}")
            return None
        result, text = adapter.read(data, ctx.template, lease.method, roll=ctx.roll,
                                    expected_subject=ctx.subject_code)
        clips = []
        if lease.method == "a" and result.get("status") != "error":
            clips = adapter.cut_clips(data, ctx.template, result, self.store)
        if self.read_delay:
            time.sleep(self.read_delay)  # tests: widen the window for a kill mid-read
        return text, clips

    def finish(self, done: list[tuple[omr_queue.Lease, str, list]]) -> None:
        if not done:
            return
        accepted = omr_queue.complete_many(self.db, done)
        for (lease, _t, _c), ok in zip(done, accepted):
            if ok:
                self.done += 1
            else:
                self.discarded += 1
                log.warning("lease on read %s of card %s was lost; result discarded", lease.read_no, lease.card_id)

    def process(self, lease: omr_queue.Lease) -> bool:
        out = self.read_one(lease)
        if out is None:
            return False
        before = self.done
        self.finish([(lease, out[0], out[1])])
        return self.done > before

    def run(self) -> int:
        cv2.setNumThreads(1)
        omr_queue.touch_node(self.db, self.node, started=True)
        beat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.node}", daemon=True)
        beat.start()
        idle_since = None
        try:
            while not self.stopping.is_set():
                if self.max_reads is not None and self.done >= self.max_reads:
                    break
                leases = omr_queue.claim(self.db, self.node, limit=self.claim_batch, lease_seconds=self.lease_seconds)
                if not leases:
                    if self.exit_when_idle:
                        idle_since = idle_since or time.monotonic()
                        if omr_queue.open_work_for(self.db, self.node) == 0 and \
                                time.monotonic() - idle_since >= self.idle_grace:
                            break
                    self.stopping.wait(self.poll_seconds)
                    continue
                idle_since = None
                with self._held_lock:
                    self._held.update({l.token: l for l in leases})
                done: list[tuple[omr_queue.Lease, str, list]] = []
                try:
                    for i, lease in enumerate(leases):
                        if self.stopping.is_set():
                            omr_queue.release(self.db, leases[i:])
                            break
                        try:
                            out = self.read_one(lease)
                        except Exception as exc:  # noqa: BLE001 - one card never stops the node
                            log.exception("read %s of card %s failed", lease.read_no, lease.card_id)
                            omr_queue.fail(self.db, lease, f"{type(exc).__name__}: {exc}")
                            continue
                        if out is not None:
                            done.append((lease, out[0], out[1]))
                    try:
                        self.finish(done)   # one fenced transaction for the claimed reads
                    except Exception:  # noqa: BLE001 - isolate the read that cannot be stored
                        log.exception("completing %d reads together failed; completing one by one", len(done))
                        for lease, text, clips in done:
                            try:
                                self.finish([(lease, text, clips)])
                            except Exception as exc:  # noqa: BLE001
                                omr_queue.fail(self.db, lease, f"{type(exc).__name__}: {exc}", retry=False)
                finally:
                    with self._held_lock:
                        for lease in leases:
                            self._held.pop(lease.token, None)
        finally:
            self.stopping.set()
            omr_queue.touch_node(self.db, self.node, state="stopped")
        return 0


def _install_signals(worker: Worker) -> None:
    def stop(signum, _frame):
        log.info("node %s: signal %s, stopping after the current read", worker.node, signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omr-worker", description="OMR worker node: reads queued cards (R-OMR-3)")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=os.environ.get("OMR_NODE"), required=os.environ.get("OMR_NODE") is None,
                   help="stable node name, e.g. omr-a (env OMR_NODE)")
    p.add_argument("--database-url", help="default: the configured MC_DATABASE_URL")
    p.add_argument("--image-store", help="default: the configured MC_IMAGE_STORE")
    p.add_argument("--lease-seconds", type=int, default=60)
    p.add_argument("--heartbeat-seconds", type=float, default=10.0)
    p.add_argument("--poll-seconds", type=float, default=0.5)
    p.add_argument("--claim-batch", type=int, default=4)
    p.add_argument("--exit-when-idle", action="store_true", help="exit when no read is left for this node")
    p.add_argument("--read-delay", type=float, default=0.0, help=argparse.SUPPRESS)


def run_from_args(args, settings=None) -> int:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node} %(levelname)s %(message)s")
    if settings is None and not (args.database_url and args.image_store):
        from marking.config import load_settings
        settings = load_settings()
    db = Database(args.database_url or settings.database_url)
    location = str(args.image_store or settings.image_store)
    if location.startswith("s3://"):   # S3-compatible store (marking.storage.S3ImageStore)
        from marking.config import load_settings
        from marking.storage import open_store
        store = open_store((settings or load_settings()).with_overrides(image_store=location))
    else:
        store = LocalImageStore(location)
    worker = Worker(db, store, args.node, lease_seconds=args.lease_seconds, heartbeat_every=args.heartbeat_seconds,
                    poll_seconds=args.poll_seconds, claim_batch=args.claim_batch, exit_when_idle=args.exit_when_idle,
                    read_delay=args.read_delay)
    _install_signals(worker)
    try:
        return worker.run()
    finally:
        db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def spawn_nodes(database_url: str, image_store: str | os.PathLike, nodes: Sequence[str] = ("omr-a", "omr-b"), *,
                exit_when_idle: bool = False, extra_args: Sequence[str] = (), log_dir: str | os.PathLike | None = None,
                env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Start one worker process per node name (a one-machine install runs omr-a and omr-b)."""
    root = Path(__file__).resolve().parents[1]
    procs = []
    for node in nodes:
        cmd = [sys.executable, "-m", "omr.worker", "--node", node, "--database-url", database_url,
               "--image-store", str(image_store), *extra_args]
        if exit_when_idle:
            cmd.append("--exit-when-idle")
        out = open(Path(log_dir) / f"{node}.log", "ab") if log_dir else subprocess.DEVNULL
        procs.append(subprocess.Popen(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                      env={**os.environ, **(env or {}), "PYTHONPATH": str(root)}))
    return procs


def stop_nodes(procs: Sequence[subprocess.Popen], timeout: float = 30) -> list[int]:
    """SIGTERM each node (graceful) and wait; returns exit codes."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


if __name__ == "__main__":
    sys.exit(main())
