"""Live events: Socket.IO authentication, topic authorisation, outbox drain, replay after reconnect."""
from __future__ import annotations

from marking import events
from webhelpers import login


def sio_client(app, actor):
    return app.extensions["mc_socketio"].test_client(app, flask_test_client=actor.client)


def outbox(received):
    return [m["args"][0] for m in received if m["name"] == "outbox"]


def test_connect_requires_session(app, world):
    anonymous = app.extensions["mc_socketio"].test_client(app, flask_test_client=app.test_client())
    assert not anonymous.is_connected()


def test_subscribe_authorisation(app, world):
    marker = sio_client(app, login(app, "marker1"))
    assert marker.is_connected()
    ack = marker.emit("subscribe", {"topics": [f"item:{world.item_id}", f"leader:{world.item_id}", "authority",
                                               f"item:{world.item2_id}", "batch:1"]}, callback=True)
    assert ack["ok"] and ack["topics"] == [f"item:{world.item_id}"]
    assert set(ack["refused"]) == {f"leader:{world.item_id}", "authority", f"item:{world.item2_id}", "batch:1"}
    leader = sio_client(app, login(app, "leader"))
    ack = leader.emit("subscribe", {"topics": [f"leader:{world.item_id}"]}, callback=True)
    assert ack["topics"] == [f"leader:{world.item_id}"]


def test_outbox_drain_emits_to_rooms(app, world, db):
    live = app.extensions["mc_live"]
    live.drain_once()                          # positions at the current end
    leader = sio_client(app, login(app, "leader"))
    marker = sio_client(app, login(app, "marker1"))
    leader.emit("subscribe", {"topics": [f"leader:{world.item_id}"]}, callback=True)
    marker.emit("subscribe", {"topics": [f"item:{world.item_id}"]}, callback=True)
    leader.get_received(), marker.get_received()
    with db.write() as s:
        events.publish(s, events.leader_topic(world.item_id), "arbitration.created", {"item_id": world.item_id})
        events.publish(s, events.item_topic(world.item_id), "third.created", {"item_id": world.item_id})
    assert live.drain_once() == 2
    got_leader = outbox(leader.get_received())
    got_marker = outbox(marker.get_received())
    assert [e["name"] for e in got_leader] == ["arbitration.created"]
    assert [e["name"] for e in got_marker] == ["third.created"]     # never the leader's topic
    assert got_leader[0]["id"] < got_marker[0]["id"]


def test_identical_events_of_one_batch_are_emitted_once_as_the_latest(app, world, db):
    live = app.extensions["mc_live"]
    live.drain_once()
    marker = sio_client(app, login(app, "marker1"))
    marker.emit("subscribe", {"topics": [f"item:{world.item_id}"]}, callback=True)
    marker.get_received()
    with db.write() as s:
        for name in ("task.claimed", "mark.submitted", "task.claimed", "task.claimed", "mark.submitted"):
            events.publish(s, events.item_topic(world.item_id), name, {"item_id": world.item_id})
        events.publish(s, events.item_topic(world.item_id), "task.claimed", {"item_id": world.item_id, "n": 2})
    assert live.drain_once() == 6                  # every row drained ...
    got = outbox(marker.get_received())
    # ... each distinct event once, the latest of its kind, in id order
    assert [(e["name"], e["payload"]) for e in got] == [
        ("task.claimed", {"item_id": world.item_id}), ("mark.submitted", {"item_id": world.item_id}),
        ("task.claimed", {"item_id": world.item_id, "n": 2})]
    ids = [e["id"] for e in got]
    assert ids == sorted(ids) and ids[-1] == live.last_id
    assert live.drain_once() == 0


def test_marking_publishes_and_replay_after_reconnect(app, world, db):
    live = app.extensions["mc_live"]
    live.drain_once()
    leader_actor = login(app, "leader")
    leader = sio_client(app, leader_actor)
    ack = leader.emit("subscribe", {"topics": [f"item:{world.item_id}"]}, callback=True)
    head = ack["head"]
    leader.disconnect()
    # while the leader is away, a marker works: the engine publishes item events
    m1 = login(app, "marker1")
    task = m1.post(f"/api/v1/items/{world.item_id}/claim", json={}).get_json()["task"]
    m1.post("/api/v1/tasks/submit", json={"token": task["token"], "score": "5", "request_id": "r1"})
    live.drain_once()
    leader = sio_client(app, leader_actor)
    ack = leader.emit("subscribe", {"topics": [f"item:{world.item_id}"], "since": head}, callback=True)
    replayed = outbox(leader.get_received())
    assert ack["replayed"] == len(replayed) >= 2
    assert {"task.claimed", "mark.submitted"} <= {e["name"] for e in replayed}
    assert all(e["id"] > head for e in replayed)
    assert all("score" not in e["payload"] for e in replayed)   # R-SEC-1: no marks in events


def test_session_end_refuses_subscribe(app, world):
    actor = login(app, "marker1")
    client = sio_client(app, actor)
    actor.post("/auth/logout", data={})
    ack = client.emit("subscribe", {"topics": [f"item:{world.item_id}"]}, callback=True)
    assert ack == {"ok": False, "error": "session_ended"}


def test_with_a_message_queue_one_process_drains_and_another_takes_over(db, tmp_path, monkeypatch):
    """Redis delivers every emit to every process: N drainers would send each event N times."""
    from marking.config import load_settings
    from web import create_app, live as live_mod

    monkeypatch.setattr(live_mod, "DRAINER_LEASE_MS", 300)
    settings = load_settings(tmp_path / "data", env={"MC_ENV": "test", "MC_DATABASE_URL": str(db.url),
                                                     "MC_REDIS_URL": "redis://127.0.0.1:6379/15"})
    apps = [create_app(settings, db, config={"TESTING": True}) for _ in range(2)]
    a, b = (app.extensions["mc_live"] for app in apps)
    try:
        a.redis.delete(a.drainer_key, a.position_key)
        a.drain_once(), b.drain_once()             # both positioned at the current end
        with db.write() as s:
            events.publish(s, "authority", "one")
            events.publish(s, "authority", "two")
        assert a.drain_once() == 2                 # a holds the lease
        assert b.drain_once() == 0                 # b stays quiet while a lives
        with db.write() as s:
            events.publish(s, "authority", "three")
        import time
        time.sleep(0.4)                            # a stops renewing: its lease lapses
        assert b.drain_once() == 1                 # b continues from a's position: only "three"
        assert a.drain_once() == 0
    finally:
        a.redis.delete(a.drainer_key, a.position_key)
        for app in apps:
            app.extensions["mc_live"].stop()
        import calibration
        calibration.uninstall()


def test_old_outbox_rows_are_pruned_in_batches_and_recent_ones_kept(db, monkeypatch):
    import datetime as dt

    from sqlalchemy import func, select, update

    from marking.models import OutboxEvent

    monkeypatch.setattr(events, "PRUNE_BATCH", 3)
    now = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
    with db.write() as s:
        for n in range(8):
            events.publish(s, "authority", f"e{n}")
    with db.write() as s:   # the first seven are three days old, the last one fresh
        ids = s.execute(select(OutboxEvent.id).order_by(OutboxEvent.id)).scalars().all()
        s.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids[:7])).values(created_at=now - dt.timedelta(days=3)))
        s.execute(update(OutboxEvent).where(OutboxEvent.id == ids[7]).values(created_at=now - dt.timedelta(hours=1)))
    assert events.prune(db, keep=dt.timedelta(hours=48), now=now) == 7   # batches of 3, 3, 1
    assert events.prune(db, keep=dt.timedelta(hours=48), now=now) == 0   # nothing old: nothing scanned
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(OutboxEvent)).scalar_one() == 1
        assert s.execute(select(OutboxEvent.name)).scalar_one() == "e7"
