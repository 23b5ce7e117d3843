
import pytest

from marking.config import ConfigError, load_settings


def test_defaults_live_in_the_data_directory(tmp_path):
    s = load_settings(tmp_path / "d", env={})
    assert s.database_url == f"sqlite:///{(tmp_path / 'd').resolve() / 'marking-centre.sqlite3'}"
    assert s.image_store == str((tmp_path / "d").resolve() / "images")
    assert s.backup_interval_hours == 12 and s.redis_url is None


def test_postgresql_url_uses_psycopg3(tmp_path):
    s = load_settings(tmp_path, env={"MC_DATABASE_URL": "postgresql://u@h/db"})
    assert s.database_url == "postgresql+psycopg://u@h/db"


def test_secret_key_required_in_production(tmp_path):
    with pytest.raises(ConfigError, match="MC_SECRET_KEY"):
        load_settings(tmp_path, env={}).require_secret_key()
    assert len(load_settings(tmp_path, env={"MC_ENV": "demo"}).require_secret_key()) == 64
    assert load_settings(tmp_path, env={"MC_SECRET_KEY": "k" * 40}).require_secret_key() == "k" * 40


@pytest.mark.parametrize("env,match", [({"MC_ENV": "prod"}, "MC_ENV"),
                                       ({"MC_CHECKPOINT_EVERY": "x"}, "whole number"),
                                       ({"MC_BACKUP_INTERVAL_HOURS": "0"}, "at least 1")])
def test_bad_settings_are_named(tmp_path, env, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(tmp_path, env=env)
