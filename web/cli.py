"""``marking-centre``: the console script and composition root.

It sits in the top layer (web → calibration → marking; web → omr) because it wires
every subsystem together; each subsystem registers its own sub-commands.
"""
from __future__ import annotations

import argparse
import sys
from functools import cached_property

import calibration
from omr import batch_cli
from omr import cli as omr_cli
from calibration import cli as calibration_cli
from marking import cli_commands, ledger, marking_cli
from marking.config import ConfigError, Settings, load_settings
from marking.db import Database


class Context:
    """What a command handler may use: settings and a lazily opened database."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def db(self) -> Database:
        calibration.install()  # seeds, self-checks, qualification and scheme gates (issue 7)
        database = Database(self.settings.database_url, ledger_chaining=self.settings.ledger_chaining)
        key_file = self.settings.ledger_key_file
        if key_file.exists():
            store = ledger.CheckpointStore(self.settings.checkpoint_dir, ledger.load_key(key_file))
            ledger.install_auto_checkpoints(database, store, self.settings.checkpoint_every)
        if self.settings.backup_on_key_change:   # R-DATA-2: the CLI's key locks and score changes too
            from marking import backup
            backup.install_change_backups(database, self.settings)
        return database

    def reset_db(self) -> None:
        if "db" in self.__dict__:
            self.__dict__.pop("db").dispose()

    @staticmethod
    def template_inspector(body: dict) -> tuple[set[str], set[str]]:
        from omr.template import item_codes  # omr is pure image work; imported only when needed
        return item_codes(body)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marking-centre", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="data directory (default $MC_DATA_DIR or ./mc-data)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_commands.register(sub)
    from web import demo
    demo.register(sub)
    from web import server
    server.register(sub)
    marking_cli.register(sub)
    calibration_cli.register(sub)
    omr_cli.register(sub)
    batch_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.data_dir)
        ctx = Context(settings)
        return int(args.handler(args, ctx) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
