"""Settings, read once from the environment and a data directory.

Every setting is documented in README.md ("Configuration"). Nothing secret has a
default outside the ``test`` and ``demo`` environments.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

ENVIRONMENTS = ("production", "development", "test", "demo")


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    environment: str
    data_dir: Path
    database_url: str
    redis_url: str | None
    image_store: str
    secret_key: str | None
    ledger_key_file: Path
    checkpoint_dir: Path
    checkpoint_every: int
    backup_dir: Path
    backup_copy_dir: Path | None
    backup_interval_hours: int
    extra: dict[str, str] = field(default_factory=dict)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    metrics_token: str | None = field(default=None, repr=False)
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    log_format: str = "text"
    backup_on_key_change: bool = False
    trusted_proxies: int = 0
    outbox_keep_hours: int = 48
    ledger_chaining: str = "inline"
    ledger_chain_interval_ms: int = 500

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def require_secret_key(self) -> str:
        """The web layer calls this before serving: no secret, no start."""
        if self.secret_key:
            return self.secret_key
        if self.environment in ("test", "demo"):
            # Tests and the demo get a random per-process key; nothing persists.
            return secrets.token_hex(32)
        raise ConfigError(
            "MC_SECRET_KEY is not set. Generate one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'` and keep it out of the repository."
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


def load_settings(data_dir: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default ``os.environ``) and an optional data dir.

    Precedence: explicit ``data_dir`` argument (the CLI's ``--data-dir``), then
    ``MC_DATA_DIR``, then ``./mc-data``. Paths derived from the data directory can
    each be overridden by their own variable.
    """
    env = dict(os.environ if env is None else env)
    environment = env.get("MC_ENV", "production")
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"MC_ENV must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
    base = Path(data_dir or env.get("MC_DATA_DIR") or "mc-data").expanduser().resolve()

    database_url = env.get("MC_DATABASE_URL") or f"sqlite:///{base / 'marking-centre.sqlite3'}"
    if database_url.startswith("postgresql://"):
        # psycopg 3 is the PostgreSQL driver (issue 2, item 5).
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]

    backup_copy = env.get("MC_BACKUP_COPY_DIR")
    # auto: deferred on PostgreSQL (no global lock in every score change), inline on SQLite
    # (writers are serialised anyway, and the chain then never trails the commits).
    chaining = _choice(env, "MC_LEDGER_CHAINING", "auto", ("auto", "inline", "deferred"))
    if chaining == "auto":
        chaining = "deferred" if database_url.startswith("postgresql") else "inline"
    return Settings(
        environment=environment,
        data_dir=base,
        database_url=database_url,
        redis_url=env.get("MC_REDIS_URL") or None,
        image_store=env.get("MC_IMAGE_STORE") or str(base / "images"),
        secret_key=env.get("MC_SECRET_KEY") or None,
        ledger_key_file=Path(env.get("MC_LEDGER_KEY_FILE") or base / "keys" / "ledger-checkpoint.key"),
        checkpoint_dir=Path(env.get("MC_CHECKPOINT_DIR") or base / "checkpoints"),
        checkpoint_every=_int(env, "MC_CHECKPOINT_EVERY", 200, minimum=1),
        backup_dir=Path(env.get("MC_BACKUP_DIR") or base / "backups"),
        backup_copy_dir=Path(backup_copy) if backup_copy else None,
        backup_interval_hours=_int(env, "MC_BACKUP_INTERVAL_HOURS", 12, minimum=1),
        s3_endpoint_url=env.get("MC_S3_ENDPOINT_URL") or None,
        s3_region=env.get("MC_S3_REGION") or None,
        metrics_token=env.get("MC_METRICS_TOKEN") or None,
        metrics_allow=tuple(a.strip() for a in (env.get("MC_METRICS_ALLOW") or "127.0.0.1,::1").split(",")
                            if a.strip()),
        log_format=_choice(env, "MC_LOG_FORMAT", "text", ("text", "json")),
        backup_on_key_change=_bool(env, "MC_BACKUP_ON_KEY_CHANGE", False),
        trusted_proxies=_int(env, "MC_TRUSTED_PROXIES", 0, minimum=0),
        outbox_keep_hours=_int(env, "MC_OUTBOX_KEEP_HOURS", 48, minimum=1),
        ledger_chaining=chaining,
        ledger_chain_interval_ms=_int(env, "MC_LEDGER_CHAIN_INTERVAL_MS", 500, minimum=10),
    )
