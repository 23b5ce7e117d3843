"""Language (zh_CN default, English per user) and the admin/technician consoles."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from babel.messages.pofile import read_po

from webhelpers import login

ROOT = Path(__file__).resolve().parents[2]


def test_chinese_by_default_english_per_user(app, world, db):
    page = app.test_client().get("/auth/login").get_data(as_text=True)
    assert "登录" in page and 'lang="zh-CN"' in page
    m1 = login(app, "marker1")
    assert "您的题目" in m1.get("/marker/").get_data(as_text=True)
    assert m1.post("/auth/locale", data={"locale": "en", "next": "/marker/"}).status_code == 302
    assert "Your items" in m1.get("/marker/").get_data(as_text=True)
    assert m1.post("/auth/locale", data={"locale": "xx"}).status_code == 422


def test_catalogue_complete():
    spec = importlib.util.spec_from_file_location("build_catalogue", ROOT / "web/translations/build_catalogue.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ids = {m.id for m in mod.extract() if m.id} | set(mod.DYNAMIC)
    with open(ROOT / "web/translations/zh_CN/LC_MESSAGES/messages.po", "rb") as handle:
        catalog = read_po(handle)
    translated = {m.id for m in catalog if m.id and m.string}
    assert ids - translated == set(), "run web/translations/build_catalogue.py and translate"


def test_json_errors_have_messages(app, world):
    m1 = login(app, "marker1")
    r = m1.get("/api/v1/nope")
    assert r.status_code == 404 and r.get_json()["message"]
    r = m1.post("/api/v1/tasks/submit", json={"token": "x", "score": "1", "request_id": "a"})
    assert r.status_code == 409 and r.get_json()["message"]
    assert "<h1>404</h1>" in m1.get("/nowhere").get_data(as_text=True)


def test_openapi_document(app, world):
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/items/{item_id}/claim" in doc["paths"]
    op = doc["paths"]["/api/v1/tasks/{token}/image"]["get"]
    assert op["x-roles"] == ["marker", "team_leader"]


def test_admin_spec_import_shows_errors(app, world, tmp_path):
    admin = login(app, "admin")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsession: {code: X}\n")
    with open(bad, "rb") as handle:
        r = admin.post("/admin/spec", data={"spec": (handle, "bad.yaml")}, content_type="multipart/form-data")
    assert r.status_code == 302
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'id="spec-errors"' in page and "bad.yaml" in page


def test_admin_users_csv_and_ledger(app, world, tmp_path):
    admin = login(app, "admin")
    csv = tmp_path / "u.csv"
    csv.write_text("username,display_name,roles\nnewmarker,New Marker,marker\n")
    with open(csv, "rb") as handle:
        r = admin.post("/admin/users/import", data={"csv": (handle, "u.csv")}, content_type="multipart/form-data")
    assert r.status_code == 302
    page = admin.get("/admin/").get_data(as_text=True)
    assert "newmarker" in page and "一次性密码" in page
    assert "newmarker" in admin.get("/admin/").get_data(as_text=True)     # listed, password not shown again
    assert admin.get("/admin/ledger").status_code == 200


def test_technician_console_and_gaps(app, world):
    tech = login(app, "tech")
    page = tech.get("/technician/").get_data(as_text=True)
    assert "扫描批次" in page
    assert tech.get("/api/v1/technician/batches").get_json() == {"batches": []}
    assert tech.get("/technician/keys").status_code == 200
