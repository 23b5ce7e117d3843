"""With Redis: an event emitted by a separate OS process reaches a Socket.IO client of the app.

Flask-SocketIO's test client refuses a message queue, so the app is served for real
(Werkzeug, threaded, loopback, ephemeral port) and a python-socketio client connects
with the login-session cookie over long-polling.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import socketio
from sqlalchemy import select
from werkzeug.serving import make_server

from tests.deploy.deploy_support import make_app
from marking.models import User
from tests.web.webhelpers import build_world, login

EMITTER = r"""
import sys, time
from flask_socketio import SocketIO
url, room, marker = sys.argv[1:4]
sio = SocketIO(message_queue=url)            # write-only: no app, no server
for _ in range(200):                          # the app subscribes asynchronously: repeat until killed
    sio.emit("probe", {"marker": marker}, to=room)
    time.sleep(0.1)
"""


def test_external_process_event_reaches_client(settings, db, redis_url):
    build_world(db, settings)
    app = make_app(settings.with_overrides(redis_url=redis_url), db)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    client = socketio.Client(reconnection=False)
    proc = None
    try:
        actor = login(app, "marker1")
        cookie = actor.client.get_cookie("mc_session")
        with db.read() as s:
            uid = s.execute(select(User.id).where(User.username == "marker1")).scalar_one()
        marker = uuid.uuid4().hex
        got = threading.Event()
        client.on("probe", lambda data: data.get("marker") == marker and got.set())
        client.connect(f"http://127.0.0.1:{http.server_port}", headers={"Cookie": f"mc_session={cookie.value}"},
                       transports=["polling"], wait_timeout=10)
        proc = subprocess.Popen([sys.executable, "-c", EMITTER, redis_url, f"user:{uid}", marker],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok = got.wait(20)
        proc.kill()
        _, err = proc.communicate(timeout=10)
        assert ok, f"no event from the external process within 20 s; emitter stderr: {err.decode()[-800:]}"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        client.disconnect()
        app.extensions["mc_live"].stop()
        http.shutdown()
        thread.join(10)
