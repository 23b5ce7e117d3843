"""Helpers for the web tests: a small exam world and logged-in clients per role."""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import pyotp
from PIL import Image, ImageDraw
from sqlalchemy import select

from marking import simulate, users
from marking.models import ExamSession, Item, ItemDuty, Response, Subject, User
from marking.storage import LocalImageStore

PASSWORD = "correct horse battery"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
# username -> roles; leaders, authority officers and admins need TOTP.
PEOPLE = {
    "marker1": ["marker"], "marker2": ["marker"], "marker3": ["marker"],
    "leader": ["team_leader", "marker"], "tech": ["technician"], "keyoff": ["key_officer"],
    "authority": ["authority_officer"], "admin": ["admin"],
}
ROLE_USER = {"marker": "marker1", "team_leader": "leader", "technician": "tech", "key_officer": "keyoff",
             "authority_officer": "authority", "admin": "admin"}


def png(text: str = "item response", size=(600, 300)) -> bytes:
    img = Image.new("L", size, 255)
    ImageDraw.Draw(img).text((20, 20), text, fill=0)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@dataclass
class World:
    item_id: int
    item2_id: int
    subject_code: str
    users: dict[str, int] = field(default_factory=dict)
    image_sha: str | None = None


def build_world(db, settings, *, responses: int = 4, threshold_cp: int = 200) -> World:
    with db.write() as s:
        exam = ExamSession(code="T-2026-10", name="test", kind="self_taught", year=2026, sitting=2)
        s.add(exam)
        s.flush()
        subject = Subject(session_id=exam.id, code="00015", name="English")
        s.add(subject)
        s.flush()
        item = Item(subject_id=subject.id, code="31", ordinal=1, kind="subjective", title="Translation",
                    max_cp=1000, step_cp=50, threshold_cp=threshold_cp, double_marked=True)
        item2 = Item(subject_id=subject.id, code="32", ordinal=2, kind="subjective", title="Essay",
                     max_cp=1500, step_cp=100, threshold_cp=300, double_marked=True)
        s.add_all([item, item2])
        s.flush()
        item_id, item2_id = item.id, item2.id
    world = World(item_id, item2_id, "00015")
    for name, roles in PEOPLE.items():
        user, _ = users.add_user(db, users.NewUser(username=name, display_name=name.title(), roles=roles,
                                                    qualification_level=2, password=PASSWORD))
        world.users[name] = user.id
    with db.write() as s:
        for name in ("leader", "authority", "admin"):
            s.get(User, world.users[name]).totp_secret = TOTP_SECRET
        for name in ("marker1", "marker2", "marker3", "leader"):
            s.add(ItemDuty(item_id=item_id, user_id=world.users[name], duty="marker"))
        s.add(ItemDuty(item_id=item_id, user_id=world.users["leader"], duty="team_leader"))
    simulate.create_responses_for_testing(db, "00015", responses, seed=1, schools=("S01",))
    sha = LocalImageStore(settings.image_store).put(png())
    with db.write() as s:
        for r in s.execute(select(Response)).scalars():
            r.image_sha256 = sha
    world.image_sha = sha
    return world


def csrf_of(client, path: str = "/auth/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, html[:300]
    return match.group(1)


def totp_codes():
    totp = pyotp.TOTP(TOTP_SECRET)
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    return [totp.at(now + dt.timedelta(seconds=30 * k)) for k in (0, 1, -1)]


class Actor:
    """A logged-in test client with the CSRF header set for JSON calls."""

    def __init__(self, client, token: str):
        self.client, self.token = client, token

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, json=None, data=None, **kw):
        headers = kw.pop("headers", {})
        headers.setdefault("X-CSRFToken", self.token)
        if data is not None:
            data = dict(data)
            data.setdefault("csrf_token", self.token)
        return self.client.post(url, json=json, data=data, headers=headers, **kw)


def login(app, username: str, password: str = PASSWORD, *, mfa: bool = True) -> Actor:
    client = app.test_client()
    token = csrf_of(client)
    r = client.post("/auth/login", data={"username": username, "password": password, "csrf_token": token})
    assert r.status_code == 302, (username, r.status_code, r.get_data(as_text=True)[:400])
    if mfa and "/auth/mfa" in r.headers["Location"]:
        token = csrf_of(client, r.headers["Location"])
        for code in totp_codes():
            r2 = client.post("/auth/mfa", data={"code": code, "csrf_token": token})
            if r2.status_code == 302:
                break
        else:
            raise AssertionError("TOTP refused")
    token = csrf_of(client, "/auth/login")
    return Actor(client, token)
