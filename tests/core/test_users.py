import pytest
from sqlalchemy import func, select

from marking import users
from marking.models import Exclusion, User


def test_add_user_hashes_with_argon2_and_logs(db):
    user, generated = users.add_user(db, users.NewUser("m1", "Marker", ["marker"], password="correct horse"))
    assert generated is None
    with db.read() as s:
        row = s.scalar(select(User).where(User.username == "m1"))
        assert row.password_hash.startswith("$argon2id$")
        assert users.verify_password(row, "correct horse") and not users.verify_password(row, "wrong one")
        assert row.role_names == {"marker"}


def test_generated_password_when_none_given(db):
    _, generated = users.add_user(db, users.NewUser("m2", "Marker", ["marker"]))
    assert generated and len(generated) >= 12


@pytest.mark.parametrize("new,needle", [
    (users.NewUser("a b", "x", ["marker"]), "username"),
    (users.NewUser("ok", "x", ["wizard"]), "unknown role"),
    (users.NewUser("ok", "x", ["marker"], qualification_level=7), "qualification level"),
    (users.NewUser("ok", "x", ["marker"], password="short"), "at least 8"),
    (users.NewUser("ok", "x", ["marker"], exclusions=[("planet", "x")]), "exclusion kind"),
])
def test_invalid_users_refused(new, needle):
    with pytest.raises(users.UserError, match=needle):
        new.validate()


def test_csv_import_all_or_nothing(db, tmp_path):
    good = tmp_path / "u.csv"
    good.write_text("username,display_name,roles,qualification_level,school_code,exclusions\n"
                    "m1,One,marker,1,S1,school:S1;region:4501\n"
                    "tl,Leader,team_leader;marker,3,,\n", encoding="utf-8")
    parsed, errors = users.parse_users_csv(good)
    assert not errors
    results = users.import_users(db, parsed)
    assert [name for name, _ in results] == ["m1", "tl"]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Exclusion)) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("username,display_name,roles\nm9,Nine,marker\nm9,Again,marker\nzz,Z,pirate\n")
    parsed, errors = users.parse_users_csv(bad)
    assert any(":3:" in e and "twice" in e for e in errors) and any(":4:" in e and "pirate" in e for e in errors)
    # An existing username aborts the whole import.
    again, _ = users.parse_users_csv(good)
    with pytest.raises(users.UserError, match="nothing imported"):
        users.import_users(db, again)
