"""CLI sub-commands, wired into the ``marking-centre`` console script by ``register``:

    card render --template T --out card.pdf|card.png [--dpi 200] [--candidate NUMBER]
    card layout --template T --dpi D [--json]
    omr read --template T IMAGE... [--method a|b] [--json] [--overlay DIR] [--page N]
             [--roll FILE] [--subject CODE]

Each handler returns an exit code: 0 success (for ``omr read``: every card read with
no flag), 1 some card needs review or could not be read, 2 bad arguments/template.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .ids import validate_candidate_number
from .layout import layout
from .reading import read_card, reading_json
from .render import write_card
from .template import TemplateError, load_template


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    card = subparsers.add_parser("card", help="answer-card templates: render and layout")
    card_sub = card.add_subparsers(dest="card_command", required=True)
    render = card_sub.add_parser("render", help="write a printable blank card (PDF or PNG)")
    render.add_argument("--template", required=True, help="card template JSON")
    render.add_argument("--out", required=True, help="output .pdf (all pages) or .png")
    render.add_argument("--dpi", type=float, default=200.0)
    render.add_argument("--candidate", help="pre-print a Code128 label with this candidate number")
    render.set_defaults(handler=cmd_card_render)
    lay = card_sub.add_parser("layout", help="bubble centres and regions in pixels")
    lay.add_argument("--template", required=True)
    lay.add_argument("--dpi", type=float, required=True)
    lay.add_argument("--json", action="store_true", help="print the full layout as JSON")
    lay.set_defaults(handler=cmd_card_layout)

    omr = subparsers.add_parser("omr", help="optical mark recognition")
    omr_sub = omr.add_subparsers(dest="omr_command", required=True)
    read = omr_sub.add_parser("read", help="read scanned answer cards")
    read.add_argument("--template", required=True)
    read.add_argument("images", nargs="+", metavar="IMAGE")
    read.add_argument("--method", choices=("a", "b"), default="a")
    read.add_argument("--json", action="store_true", help="print one JSON reading per line")
    read.add_argument("--overlay", metavar="DIR", help="write overlay images to DIR")
    read.add_argument("--page", type=int, help="expected page code")
    read.add_argument("--roll", metavar="FILE", help="file with the batch roll, one number per line")
    read.add_argument("--subject", help="expected subject code")
    read.set_defaults(handler=cmd_omr_read)


def _template(path: str) -> Any:
    try:
        return load_template(path)
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_card_render(args: argparse.Namespace) -> int:
    template = _template(args.template)
    if template is None:
        return 2
    if args.candidate and validate_candidate_number(args.candidate):
        print(f"error: candidate number {args.candidate}: "
              f"{'; '.join(validate_candidate_number(args.candidate))} (R-OMR-8)", file=sys.stderr)
        return 2
    try:
        paths = write_card(template, args.out, args.dpi, args.candidate)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def cmd_card_layout(args: argparse.Namespace) -> int:
    template = _template(args.template)
    if template is None:
        return 2
    lay = layout(template, args.dpi)
    if args.json:
        print(json.dumps(lay, ensure_ascii=False, sort_keys=True))
    else:
        print(f"{template.id} {template.version}  hash {template.content_hash}")
        print(f"page {lay['page_size_px'][0]} x {lay['page_size_px'][1]} px at {args.dpi:g} dpi, "
              f"bubble radius {lay['bubble_radius_px']} px")
        for pg in lay["pages"]:
            print(f"  page {pg['code']}: {len(pg['bubbles'])} bubbles, "
                  f"{len(pg['answer_regions'])} answer regions, {len(pg['identity_regions'])} identity regions")
    return 0


def cmd_omr_read(args: argparse.Namespace) -> int:
    template = _template(args.template)
    if template is None:
        return 2
    roll = None
    if args.roll:
        try:
            roll = {line.strip() for line in Path(args.roll).read_text(encoding="utf-8").splitlines() if line.strip()}
        except OSError as exc:
            print(f"error: roll: {exc}", file=sys.stderr)
            return 2
    overlay_dir = Path(args.overlay) if args.overlay else None
    if overlay_dir:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    worst = 0
    for path in args.images:
        reading = read_card(Path(path), template, args.method, page=args.page, roll=roll,
                            expected_subject=args.subject)
        reading["file"] = str(path)
        if reading["status"] != "ok":
            worst = 1
        if args.json:
            print(reading_json(reading))
        else:
            print(_summary(reading))
        if overlay_dir:
            from .overlay import draw_overlay

            data = np.fromfile(path, dtype=np.uint8) if Path(path).exists() else np.zeros(0, np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            if img is not None:
                out = overlay_dir / f"{Path(path).stem}.overlay-{args.method}.png"
                cv2.imwrite(str(out), draw_overlay(img, template, reading))
    return worst


def _summary(r: dict[str, Any]) -> str:
    if r["status"] == "error":
        return f"{r['file']}: ERROR {r['error']['reason']}: {r['error']['detail']}"
    cn = r.get("candidate_number") or {}
    answers = " ".join(f"{k}:{''.join(v['chosen']) or '-'}{'?' if v['flags'] else ''}"
                       for k, v in r["objective"].items())
    flags = ", ".join(f["code"] + (f"[{f['item']}]" if "item" in f else "") for f in r["flags"])
    return (f"{r['file']}: {r['status']} page {r['page']['used']} orientation {r['orientation']} "
            f"rms {r['alignment']['rms_mm']} mm candidate {cn.get('value')}\n  {answers}"
            + (f"\n  flags: {flags}" if flags else ""))
