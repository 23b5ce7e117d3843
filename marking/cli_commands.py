"""Core sub-commands of ``marking-centre``: db, user, exam, audit, backup, restore.

Each handler is ``handler(args, ctx) -> exit code``; ``ctx`` carries settings and a
lazily opened database (see web/cli.py, the composition root).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import backup, examspec, ledger, migrate, users
from .config import ConfigError


def guard(fn):
    """Turn a service's refusal into a one-line error and exit status 2 (no traceback)."""
    from .access import NotAllowed
    from .scores import ScoreError

    def handler(args, ctx) -> int:
        try:
            return fn(args, ctx)
        except (NotAllowed, LookupError, ScoreError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    handler.__name__ = fn.__name__
    return handler


def user_id_by_name(db, username: str) -> int:
    from sqlalchemy import select

    from .models import User
    with db.read() as session:
        user_id = session.execute(select(User.id).where(User.username == username)).scalar_one_or_none()
    if user_id is None:
        raise LookupError(f"no user {username!r}")
    return user_id


def subjective_item_id(db, code: str, subject_code: str | None) -> int:
    """The id of subjective item ``code`` (in ``subject_code`` when given; it must be unique)."""
    from sqlalchemy import select

    from .models import Item
    from .totals import find_subject
    with db.read() as session:
        query = select(Item.id).where(Item.code == code, Item.kind == "subjective")
        if subject_code:
            query = query.where(Item.subject_id == find_subject(session, subject_code).id)
        ids = session.execute(query).scalars().all()
    if len(ids) != 1:
        raise LookupError(f"item {code!r}: {'not found' if not ids else 'ambiguous, give --subject'}")
    return ids[0]


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- db

def cmd_db_upgrade(args, ctx) -> int:
    ctx.settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(ctx.db)
    print(f"database at revision {migrate.current_revision(ctx.db)} ({ctx.db.dialect})")
    return 0


def cmd_db_current(args, ctx) -> int:
    current, head = migrate.current_revision(ctx.db), migrate.head_revision()
    print(f"current {current or 'none'}; newest {head}")
    return 0 if current == head else 1


# --------------------------------------------------------------------------- users

def cmd_user_add(args, ctx) -> int:
    new = users.NewUser(username=args.username, display_name=args.name or args.username,
                        roles=args.role, qualification_level=args.level, school_code=args.school,
                        region_code=args.region, password=args.password,
                        exclusions=[tuple(e.split(":", 1)) for e in args.exclude])
    try:
        _, generated = users.add_user(ctx.db, new)
    except users.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.username} created with role(s) {', '.join(args.role)}")
    if generated:
        print(f"one-time password (shown once, hand it to the user in person): {generated}")
    return 0


def cmd_user_import(args, ctx) -> int:
    parsed, errors = users.parse_users_csv(Path(args.file))
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        print("nothing imported", file=sys.stderr)
        return 2
    try:
        results = users.import_users(ctx.db, parsed)
    except users.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"imported {len(results)} user(s)")
    generated = [(name, pw) for name, pw in results if pw]
    if generated and args.passwords_out:
        out = Path(args.passwords_out)
        out.write_text("username,one_time_password\n" + "".join(f"{n},{p}\n" for n, p in generated))
        out.chmod(0o600)
        print(f"{len(generated)} one-time password(s) written to {out} (mode 600); hand them out and delete it")
    elif generated:
        print(f"{len(generated)} user(s) got one-time passwords; re-run with --passwords-out to receive them",
              file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- exam

def cmd_exam_import(args, ctx) -> int:
    try:
        summary = examspec.import_spec(ctx.db, Path(args.spec), template_inspector=ctx.template_inspector)
    except examspec.SpecError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"{len(exc.errors)} error(s); nothing imported", file=sys.stderr)
        return 2
    print(f"imported session {summary['session']}: {summary['subjects']} subject(s), "
          f"{summary['items']} item(s), {summary['candidates']} candidate(s)")
    return 0


def cmd_exam_check(args, ctx) -> int:
    try:
        spec = examspec.parse_spec(Path(args.spec), template_inspector=ctx.template_inspector)
    except examspec.SpecError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    print(f"{args.spec}: valid ({len(spec.subjects)} subject(s), {len(spec.candidates)} candidate(s))")
    return 0


# --------------------------------------------------------------------------- audit

def checkpoint_store(settings, *, create_key: bool = False) -> ledger.CheckpointStore:
    key_file = Path(settings.ledger_key_file)
    if create_key and not key_file.exists():
        ledger.generate_key_file(key_file)
    return ledger.CheckpointStore(Path(settings.checkpoint_dir), ledger.load_key(key_file))


def cmd_audit_verify(args, ctx) -> int:
    store = None
    if not args.no_checkpoints:
        try:
            store = checkpoint_store(ctx.settings)
        except ledger.LedgerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result = ledger.verify(ctx.db, store)
    if args.json:
        _print_json(result.as_dict())
    elif result.ok:
        print(f"ledger intact: {result.events} event(s), head {result.head_seq}, "
              f"{result.checkpoints} signed checkpoint(s) match")
    else:
        print(f"LEDGER BROKEN at sequence {result.first_bad_seq}: {result.message}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_audit_checkpoint(args, ctx) -> int:
    try:
        cp = ledger.checkpoint_now(ctx.db, checkpoint_store(ctx.settings))
    except ledger.LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"checkpoint written: seq {cp.seq} hash {cp.hash}")
    return 0


def cmd_audit_keygen(args, ctx) -> int:
    path = Path(args.out or ctx.settings.ledger_key_file)
    if path.exists():
        print(f"error: {path} exists; a key is never overwritten (old checkpoints need it)", file=sys.stderr)
        return 2
    ledger.generate_key_file(path)
    print(f"checkpoint key written to {path} (mode 600). Keep a copy off this host.")
    return 0


def cmd_audit_images(args, ctx) -> int:
    """R-DATA-1: re-hash every stored image the database refers to (or one shard of them)."""
    from . import fixity
    from .storage import open_store
    try:
        shard = fixity.parse_shard(args.shard)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def progress(event) -> None:
        print(f"\rchecked {event['checked']}: {event['missing']} missing, {event['altered']} altered, "
              f"{event['unreadable']} unreadable", end="\n" if event["done"] else "", file=sys.stderr, flush=True)

    report = fixity.audit_images(ctx.db, open_store(ctx.settings), shard=shard,
                                 progress=None if args.quiet or args.json else progress)
    if args.json:
        _print_json(report.as_dict())
    elif report.ok:
        print(f"images intact: {report.checked} checked"
              + (f" (shard {shard[0]}/{shard[1]}; {report.skipped} in other shards)" if shard[1] > 1 else ""))
    else:
        for kind in ("missing", "altered", "unreadable"):
            for problem in getattr(report, kind):
                print(f"IMAGE {kind.upper()}: {problem['sha256']} (first referred to by {problem['table']} "
                      f"{problem['id']}){': ' + problem['error'] if 'error' in problem else ''}", file=sys.stderr)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------- backup

def cmd_backup(args, ctx) -> int:
    try:
        path = backup.create_backup(ctx.db, ctx.settings, label=args.label)
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"backup written to {path}")
    return 0


def cmd_backup_list(args, ctx) -> int:
    for path in backup.list_backups(ctx.settings):
        print(path)
    return 0


def cmd_restore(args, ctx) -> int:
    try:
        manifest = backup.restore_backup(Path(args.backup), ctx.settings.database_url, force=args.force)
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctx.reset_db()
    result = ledger.verify(ctx.db, None)
    counts = backup.table_counts(ctx.db)
    mismatched = {k: (v, counts.get(k)) for k, v in manifest["counts"].items() if counts.get(k) != v}
    print(f"restored {args.backup} (ledger head {manifest['ledger_head']['seq']})")
    if not result.ok or mismatched:
        print(f"RESTORE CHECK FAILED: ledger {result.message}; count mismatches {mismatched}", file=sys.stderr)
        return 1
    print(f"ledger verifies ({result.events} events); row counts match the manifest")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create or migrate the schema").set_defaults(handler=cmd_db_upgrade)
    db.add_parser("current", help="show the schema revision").set_defaults(handler=cmd_db_current)

    user = sub.add_parser("user", help="accounts").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="create one user")
    add.add_argument("username")
    add.add_argument("--name", help="display name")
    add.add_argument("--role", action="append", required=True,
                     help="marker, team_leader, technician, key_officer, authority_officer or admin (repeatable)")
    add.add_argument("--level", type=int, default=0, help="qualification level 0–3 (R-ROLE-1)")
    add.add_argument("--school")
    add.add_argument("--region")
    add.add_argument("--exclude", action="append", default=[], metavar="KIND:VALUE",
                     help="conflict exclusion, e.g. school:S4501 (R-ROLE-4)")
    add.add_argument("--password", help="initial password (default: a generated one-time password)")
    add.set_defaults(handler=cmd_user_add)
    imp = user.add_parser("import", help="import users from CSV (all or nothing)")
    imp.add_argument("file")
    imp.add_argument("--passwords-out", help="write generated one-time passwords to this file (mode 600)")
    imp.set_defaults(handler=cmd_user_import)

    exam = sub.add_parser("exam", help="exam specifications").add_subparsers(dest="exam_command", required=True)
    ei = exam.add_parser("import", help="validate and import a specification")
    ei.add_argument("spec")
    ei.set_defaults(handler=cmd_exam_import)
    ec = exam.add_parser("check", help="validate a specification without importing")
    ec.add_argument("spec")
    ec.set_defaults(handler=cmd_exam_check)

    audit = sub.add_parser("audit", help="the score ledger and the image store's fixity").add_subparsers(dest="audit_command", required=True)
    av = audit.add_parser("verify", help="recompute the chain and check it against the signed checkpoints")
    av.add_argument("--json", action="store_true")
    av.add_argument("--no-checkpoints", action="store_true", help="check the chain only")
    av.set_defaults(handler=cmd_audit_verify)
    audit.add_parser("checkpoint", help="sign and record the chain head now").set_defaults(handler=cmd_audit_checkpoint)
    kg = audit.add_parser("keygen", help="create the checkpoint signing key")
    kg.add_argument("--out")
    kg.set_defaults(handler=cmd_audit_keygen)
    ai = audit.add_parser("images", help="fixity audit: re-hash every stored image the database refers to "
                                         "(R-DATA-1); exit 1 if one is missing or altered")
    ai.add_argument("--shard", metavar="K/N", help="check only shard K of N (by hash; a shard a night covers the "
                                                    "store in N nights)")
    ai.add_argument("--json", action="store_true")
    ai.add_argument("--quiet", action="store_true", help="no progress line")
    ai.set_defaults(handler=cmd_audit_images)

    bk = sub.add_parser("backup", help="write a verified backup")
    bk.add_argument("--label", default="manual")
    bk.add_argument("--list", action="store_true", help="list backups instead")
    bk.set_defaults(handler=lambda a, c: cmd_backup_list(a, c) if a.list else cmd_backup(a, c))
    rs = sub.add_parser("restore", help="restore a backup into the configured database")
    rs.add_argument("backup")
    rs.add_argument("--force", action="store_true", help="replace an existing database")
    rs.set_defaults(handler=cmd_restore)


__all__ = ["register", "checkpoint_store", "ConfigError"]
