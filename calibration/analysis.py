"""Item analysis after marking (R-ROLE-2: the team leader writes it) and its report.

Per subjective item, over resolved responses of scripts with a complete total:
mean, SD (sample), difficulty = mean / max, discrimination = item–rest correlation
(Pearson between the item score and the script total minus the item), score
distribution (count per score; finals that are means of two marks can be between
steps and are listed exactly). Per subject: scripts totalled and the pass rate
(rounded total ≥ pass mark, the same rule as ``marking.totals``).

The report is HTML (plots embedded as PNG data URIs) and PDF (matplotlib PdfPages).
"""
from __future__ import annotations

import base64
import datetime as dt
import html
from collections import Counter
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy import select

from marking.models import Item, Response, Script
from marking.scores import format_points, from_cp
from marking.totals import find_subject

from . import metrics, plots


def item_analysis(db, subject_code: str, session_code: str | None = None) -> dict[str, Any]:
    with db.read() as session:
        subject = find_subject(session, subject_code, session_code)
        items = session.execute(select(Item).where(Item.subject_id == subject.id, Item.kind == "subjective")
                                .order_by(Item.ordinal)).scalars().all()
        scripts = session.execute(select(Script).where(Script.subject_id == subject.id,
                                                       Script.total_num.is_not(None))).scalars().all()
        totals = {s.id: Fraction(s.total_num, s.total_den) for s in scripts}
        rounded = [Decimal(s.total_rounded) for s in scripts if s.total_rounded is not None]
        pass_mark = Decimal(subject.pass_mark_cp) / 100
        out_items = []
        for item in items:
            rows = session.execute(select(Response.script_id, Response.final_num, Response.final_den)
                                   .where(Response.item_id == item.id, Response.status == "resolved")).all()
            finals = {sid: Fraction(n, d) for sid, n, d in rows}
            scores = [float(v) for v in finals.values()]
            mean, sd = metrics.mean_sd(scores)
            both = [(float(finals[sid]), float(totals[sid] - finals[sid])) for sid in finals if sid in totals]
            disc = metrics.pearson([x for x, _ in both], [y for _, y in both]) if len(both) > 2 else None
            max_p = from_cp(item.max_cp)
            dist = Counter(finals.values())
            out_items.append({
                "item_id": item.id, "code": item.code, "title": item.title, "max": format_points(max_p),
                "n": len(scores), "mean": None if mean is None else round(mean, 3),
                "sd": None if sd is None else round(sd, 3),
                "difficulty": None if mean is None else round(mean / float(max_p), 3),
                "discrimination": None if disc is None else round(disc, 3),
                "distribution": [[format_points(k), v] for k, v in sorted(dist.items())],
                "_scores": scores, "_max": float(max_p), "_step": float(from_cp(item.step_cp)),
            })
        return {"subject": subject.code, "name": subject.name, "pass_mark": str(pass_mark),
                "scripts_totalled": len(scripts),
                "pass_rate": round(sum(r >= pass_mark for r in rounded) / len(rounded), 4) if rounded else None,
                "items": out_items}


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "items": [{k: v for k, v in i.items() if not k.startswith("_")} for i in data["items"]]}


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1%}"


def render_html(data: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Item analysis {e(data['subject'])}</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
             "padding:2px 6px;text-align:right}</style></head><body>",
             f"<h1>Item analysis — {e(data['subject'])} {e(data['name'])}</h1>",
             f"<p>Generated {e(dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}. "
             f"Scripts totalled: {data['scripts_totalled']}. Pass mark {e(data['pass_mark'])}; "
             f"pass rate: {_pct(data['pass_rate'])}.</p>",
             "<table><tr><th>Item</th><th>Max</th><th>n</th><th>Mean</th><th>SD</th><th>Difficulty</th>"
             "<th>Discrimination</th></tr>"]
    for i in data["items"]:
        parts.append("<tr>" + "".join(f"<td>{e(str(v if v is not None else '—'))}</td>" for v in
                                      (i["code"], i["max"], i["n"], i["mean"], i["sd"], i["difficulty"],
                                       i["discrimination"])) + "</tr>")
    parts.append("</table>")
    for i in data["items"]:
        if not i["_scores"]:
            continue
        png = plots.histogram(i["_scores"], i["_max"], i["_step"], f"Item {i['code']}: final scores")
        parts.append(f"<h2>Item {e(i['code'])}</h2><img alt='distribution of item {e(i['code'])}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
        parts.append("<p>Distribution: " + ", ".join(f"{e(s)}: {n}" for s, n in i["distribution"]) + "</p>")
    parts.append("</body></html>")
    return "".join(parts)


def render_pdf(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        fig, ax = plt.subplots(figsize=(8.27, 11.69))
        ax.axis("off")
        ax.set_title(f"Item analysis — {data['subject']} {data['name']}", fontsize=12)
        rate = "—" if data["pass_rate"] is None else f"{data['pass_rate']:.1%}"
        cells = [[i["code"], i["max"], i["n"], i["mean"], i["sd"], i["difficulty"], i["discrimination"]]
                 for i in data["items"]]
        cells = [["—" if v is None else str(v) for v in row] for row in cells] or [["—"] * 7]
        table = ax.table(cellText=cells, colLabels=["Item", "Max", "n", "Mean", "SD", "Difficulty", "Discr."],
                         loc="upper center")
        table.scale(1, 1.4)
        ax.text(0, 0.02, f"Scripts totalled: {data['scripts_totalled']}; pass mark {data['pass_mark']}; "
                         f"pass rate {rate}", transform=ax.transAxes)
        pdf.savefig(fig)
        plt.close(fig)
        for i in data["items"]:
            if not i["_scores"]:
                continue
            fig, ax = plt.subplots(figsize=(8.27, 5))
            import numpy as np
            bins = np.arange(-i["_step"] / 2, i["_max"] + i["_step"], i["_step"])
            ax.hist(i["_scores"], bins=bins, edgecolor="white")
            ax.set_title(f"Item {i['code']}: final scores (mean {i['mean']}, SD {i['sd']})")
            pdf.savefig(fig)
            plt.close(fig)


def export_report(db, subject_code: str, out_dir: Path, session_code: str | None = None) -> dict[str, Path]:
    """Write item-analysis.html, item-analysis.pdf and item-analysis.json into ``out_dir``."""
    import json

    data = item_analysis(db, subject_code, session_code)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "item-analysis.html", "pdf": out_dir / "item-analysis.pdf",
             "json": out_dir / "item-analysis.json"}
    paths["html"].write_text(render_html(data), encoding="utf-8")
    render_pdf(data, paths["pdf"])
    paths["json"].write_text(json.dumps(_public(data), ensure_ascii=False, indent=2), encoding="utf-8")
    return paths
