"""Exam specification files: validate with errors by field and line, then import all or nothing.

The format is documented in docs/exam-spec.md; examples/ has complete specs.
Numbers are read from the YAML source text, never through YAML's float parser, so
"0.5" is exactly one half (R-MARK-2).
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import ledger, policy, templates
from .candidates import candidate_number_problems
from .models import (Candidate, CardTemplate, ExamSession, Item, Registration, Subject)
from .models.exam import MULTI_RULES, SESSION_KINDS, TOTAL_ROUNDING
from .scores import ScoreError, parse_points, to_cp

# Given a parsed card template, return (objective item codes, subjective item codes).
TemplateInspector = Callable[[dict], tuple[set[str], set[str]]]


class SpecError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class _Ctx:
    source: str
    errors: list[str] = field(default_factory=list)

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = f" (line {node.start_mark.line + 1})" if node is not None else ""
        self.errors.append(f"{self.source}: {path}{line}: {message}")


# --------------------------------------------------------------------------- node helpers

def _mapping(ctx: _Ctx, node: yaml.Node, path: str) -> dict[str, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        ctx.error(node, path, "expected a mapping of keys to values")
        return None
    result: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
        if name in result:
            ctx.error(key, f"{path}.{name}", "key given twice")
        result[name] = value
    return result


def _unknown(ctx: _Ctx, mapping: dict[str, yaml.Node], allowed: set[str], path: str) -> None:
    for name, node in mapping.items():
        if name not in allowed:
            ctx.error(node, f"{path}.{name}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _text(ctx, mapping, key, path, *, required=True, default=None, max_len=200) -> str | None:
    node = mapping.get(key)
    if node is None:
        if required:
            ctx.error(None, f"{path}.{key}", "is required")
        return default
    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        ctx.error(node, f"{path}.{key}", "expected a non-empty value")
        return default
    if len(node.value) > max_len:
        ctx.error(node, f"{path}.{key}", f"longer than {max_len} characters")
    return node.value


def _int(ctx, mapping, key, path, *, required=True, default=None, lo=None, hi=None) -> int | None:
    text = _text(ctx, mapping, key, path, required=required)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        ctx.error(mapping[key], f"{path}.{key}", f"{text!r} is not a whole number")
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        ctx.error(mapping[key], f"{path}.{key}", f"{value} is outside {lo}–{hi}")
    return value


def _bool(ctx, mapping, key, path, default: bool) -> bool:
    node = mapping.get(key)
    if node is None:
        return default
    value = str(node.value).lower() if isinstance(node, yaml.ScalarNode) else ""
    if value in ("true", "yes", "on"):
        return True
    if value in ("false", "no", "off"):
        return False
    ctx.error(node, f"{path}.{key}", "expected true or false")
    return default


def _points_cp(ctx, mapping, key, path, *, required=True, positive=False) -> int | None:
    text = _text(ctx, mapping, key, path, required=required)
    if text is None:
        return None
    try:
        cp = to_cp(parse_points(text))
    except (ScoreError, TypeError) as exc:
        ctx.error(mapping[key], f"{path}.{key}", str(exc))
        return None
    if positive and cp <= 0:
        ctx.error(mapping[key], f"{path}.{key}", "must be greater than 0")
    return cp


def _choice(ctx, mapping, key, path, choices, default) -> str:
    text = _text(ctx, mapping, key, path, required=False)
    if text is None:
        return default
    if text not in choices:
        ctx.error(mapping[key], f"{path}.{key}", f"{text!r} is not one of {', '.join(choices)}")
        return default
    return text


def _weight_pm(ctx, mapping, key, path) -> int | None:
    """'30%', '0.3' or '3/10' → 300 per-mille (exact)."""
    text = _text(ctx, mapping, key, path, required=False)
    if text is None:
        return None
    try:
        value = Fraction(parse_points(text[:-1])) / 100 if text.endswith("%") else parse_points(text)
        per_mille = value * 1000
        if per_mille.denominator != 1 or not 0 <= per_mille <= 1000:
            raise ScoreError("a weight between 0 and 1 in whole per-mille")
    except (ScoreError, TypeError) as exc:
        ctx.error(mapping[key], f"{path}.{key}", f"{text!r}: {exc}")
        return None
    return int(per_mille)


def _codes(ctx, node, text: str, path: str) -> list[str]:
    """'1-30' → ['1', …, '30']; '41' → ['41']."""
    if "-" in text:
        lo, _, hi = text.partition("-")
        if lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):
            return [str(n) for n in range(int(lo), int(hi) + 1)]
        ctx.error(node, path, f"{text!r} is not a range like 1-30")
        return []
    return [text]


# --------------------------------------------------------------------------- parsed spec

@dataclass
class ItemSpec:
    code: str
    kind: str
    max_cp: int
    title: str = ""
    options: str | None = None
    multi_select: bool = False
    multi_rule: str | None = None
    partial_cp: int | None = None
    step_cp: int | None = None
    threshold_cp: int | None = None
    double_marked: bool = True
    policy_name: str | None = None
    policy_params: dict[str, Any] | None = None
    required_qualification: int = 0
    daily_cap: int | None = None


@dataclass
class SubjectSpec:
    code: str
    name: str
    pass_mark_cp: int
    total_rounding: str
    total_places: int
    process_weight_pm: int | None
    double_pass: bool
    pass_band_cp: int
    template_path: Path | None
    template_body: dict | None
    items: list[ItemSpec]


@dataclass
class CandidateSpec:
    candidate_no: str
    name: str
    school_code: str | None
    region_code: str | None
    subjects: list[str]


@dataclass
class ExamSpec:
    source: Path
    sha256: str
    session: dict[str, Any]
    subjects: list[SubjectSpec]
    candidates: list[CandidateSpec]


def _parse_item_common(ctx, m, path, kind) -> dict:
    return {"title": _text(ctx, m, "title", path, required=False, default="") or ""}


def _parse_objective(ctx, node, path) -> list[ItemSpec]:
    m = _mapping(ctx, node, path)
    if m is None:
        return []
    _unknown(ctx, m, {"code", "codes", "title", "options", "points", "multi", "multi_rule", "partial_points"}, path)
    if ("code" in m) == ("codes" in m):
        ctx.error(node, path, "give exactly one of code or codes")
        return []
    key = "code" if "code" in m else "codes"
    codes = _codes(ctx, m[key], m[key].value, f"{path}.{key}")
    options = _text(ctx, m, "options", path)
    if options is not None and (len(options) < 2 or len(set(options)) != len(options) or not options.isalpha()):
        ctx.error(m["options"], f"{path}.options", "list at least two distinct option letters, e.g. ABCD")
    points = _points_cp(ctx, m, "points", path, positive=True)
    multi = _bool(ctx, m, "multi", path, False)
    rule = _choice(ctx, m, "multi_rule", path, MULTI_RULES, "all_or_nothing") if multi else None
    partial = _points_cp(ctx, m, "partial_points", path, required=False)
    if multi and rule == "partial_subset" and partial is None:
        ctx.error(node, f"{path}.partial_points", "is required with multi_rule partial_subset")
    if partial is not None and points is not None and partial > points:
        ctx.error(m["partial_points"], f"{path}.partial_points", "cannot exceed points")
    title = _parse_item_common(ctx, m, path, "objective")["title"]
    return [ItemSpec(code=c, kind="objective", max_cp=points or 1, title=title, options=options,
                     multi_select=multi, multi_rule=rule, partial_cp=partial) for c in codes]


def _policy_params(ctx, mapping: dict[str, yaml.Node], path: str) -> dict[str, Any] | None:
    """Policy knobs from YAML text, typed as marking.policy expects, then validated there."""
    params: dict[str, Any] = {}
    for key, node in mapping.items():
        if key == "name":
            continue
        if key in policy.BOOL_KEYS:
            params[key] = _bool(ctx, mapping, key, path, False)
        elif isinstance(node, yaml.ScalarNode):
            params[key] = node.value
        else:
            ctx.error(node, f"{path}.{key}", "expected a single value")
    try:
        policy.normalise(params)
    except policy.PolicyError as exc:
        ctx.error(mapping.get("name") or next(iter(mapping.values()), None), path, str(exc))
        return None
    return params


def _parse_subjective(ctx, node, path) -> ItemSpec | None:
    m = _mapping(ctx, node, path)
    if m is None:
        return None
    _unknown(ctx, m, {"code", "title", "max", "step", "threshold", "double_marked", "policy",
                      "qualification", "daily_cap"}, path)
    code = _text(ctx, m, "code", path, max_len=20)
    max_cp = _points_cp(ctx, m, "max", path, positive=True)
    step_cp = _points_cp(ctx, m, "step", path, positive=True)
    threshold_cp = _points_cp(ctx, m, "threshold", path)
    if max_cp and step_cp and max_cp % step_cp:
        ctx.error(m["step"], f"{path}.step", "the maximum must be a whole number of steps")
    if max_cp is not None and threshold_cp is not None and threshold_cp > max_cp:
        ctx.error(m["threshold"], f"{path}.threshold", "cannot exceed the maximum")
    policy_name, params = policy.DEFAULT_NAME, None
    if "policy" in m:
        pnode = m["policy"]
        if isinstance(pnode, yaml.ScalarNode):
            policy_name = pnode.value
        else:
            pm = _mapping(ctx, pnode, f"{path}.policy")
            if pm is not None:
                policy_name = _text(ctx, pm, "name", f"{path}.policy") or policy.DEFAULT_NAME
                params = _policy_params(ctx, pm, f"{path}.policy")
    return ItemSpec(
        code=code or "?", kind="subjective", max_cp=max_cp or 1, title=_parse_item_common(ctx, m, path, "s")["title"],
        step_cp=step_cp, threshold_cp=threshold_cp, double_marked=_bool(ctx, m, "double_marked", path, True),
        policy_name=policy_name, policy_params=params,
        required_qualification=_int(ctx, m, "qualification", path, required=False, default=0, lo=0, hi=3) or 0,
        daily_cap=_int(ctx, m, "daily_cap", path, required=False, lo=1, hi=100000),
    )


def _parse_subject(ctx, node, path, base_dir: Path) -> SubjectSpec | None:
    m = _mapping(ctx, node, path)
    if m is None:
        return None
    _unknown(ctx, m, {"code", "name", "card_template", "pass_mark", "total_rounding", "total_places",
                      "process_weight", "double_pass", "pass_band", "objective", "subjective"}, path)
    template_path = template_body = None
    tpl = _text(ctx, m, "card_template", path, required=False, max_len=400)
    if tpl is not None:
        template_path = (base_dir / tpl).resolve()
        try:
            template_body = json.loads(template_path.read_text(encoding="utf-8"))
            if not isinstance(template_body, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            ctx.error(m["card_template"], f"{path}.card_template", f"cannot read {tpl}: {exc}")
            template_body = None
    items: list[ItemSpec] = []
    for key, parse in (("objective", _parse_objective), ("subjective", _parse_subjective)):
        seq = m.get(key)
        if seq is None:
            continue
        if not isinstance(seq, yaml.SequenceNode):
            ctx.error(seq, f"{path}.{key}", "expected a list")
            continue
        for index, child in enumerate(seq.value):
            parsed = parse(ctx, child, f"{path}.{key}[{index}]")
            items.extend(parsed if isinstance(parsed, list) else ([parsed] if parsed else []))
    if not items:
        ctx.error(node, path, "a subject needs at least one item")
    seen: set[str] = set()
    for item in items:
        if item.code in seen:
            ctx.error(node, f"{path}", f"item code {item.code} is used twice")
        seen.add(item.code)
    process_weight = _weight_pm(ctx, m, "process_weight", path)
    return SubjectSpec(
        code=_text(ctx, m, "code", path, max_len=20) or "?",
        name=_text(ctx, m, "name", path) or "?",
        pass_mark_cp=_points_cp(ctx, m, "pass_mark", path, required=False) or 6000,
        total_rounding=_choice(ctx, m, "total_rounding", path, TOTAL_ROUNDING, "half_up"),
        total_places=_int(ctx, m, "total_places", path, required=False, default=0, lo=0, hi=2) or 0,
        process_weight_pm=process_weight,
        double_pass=_bool(ctx, m, "double_pass", path, False),
        pass_band_cp=_points_cp(ctx, m, "pass_band", path, required=False) or 0,
        template_path=template_path, template_body=template_body, items=items,
    )


def _parse_roll(ctx, node, path, base_dir, session_meta, subject_codes) -> list[CandidateSpec]:
    roll_path = (base_dir / node.value).resolve()
    try:
        handle = open(roll_path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        ctx.error(node, path, f"cannot read roll {node.value}: {exc}")
        return []
    result: list[CandidateSpec] = []
    seen: set[str] = set()
    with handle:
        reader = csv.DictReader(handle)
        missing = {"candidate_no", "name", "subjects"} - set(reader.fieldnames or [])
        if missing:
            ctx.errors.append(f"{roll_path}: missing column(s) {', '.join(sorted(missing))}")
            return []
        for row in reader:
            where = f"{roll_path}:{reader.line_num}"
            number = (row["candidate_no"] or "").strip()
            problems = candidate_number_problems(number, year=session_meta.get("year"),
                                                sitting=session_meta.get("sitting"))
            if problems:
                ctx.errors.append(f"{where}: candidate_no: {'; '.join(problems)} (R-OMR-8)")
            if number in seen:
                ctx.errors.append(f"{where}: candidate_no {number} appears twice")
            seen.add(number)
            subjects = [s.strip() for s in (row["subjects"] or "").split(";") if s.strip()]
            for code in subjects:
                if code not in subject_codes:
                    ctx.errors.append(f"{where}: subject {code} is not in this specification")
            result.append(CandidateSpec(number, (row["name"] or "").strip(), (row.get("school_code") or "").strip() or None,
                                        (row.get("region_code") or "").strip() or None, subjects))
    return result


def parse_spec(path: Path, template_inspector: TemplateInspector | None = None) -> ExamSpec:
    """Parse and validate; raise SpecError listing every problem with its line."""
    path = Path(path)
    ctx = _Ctx(source=str(path))
    try:
        raw = path.read_bytes()
        root = yaml.compose(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot read: {exc}"]) from exc
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from exc
    if root is None:
        raise SpecError([f"{path}: the file is empty"])
    top = _mapping(ctx, root, "spec")
    if top is None:
        raise SpecError(ctx.errors)
    _unknown(ctx, top, {"version", "session", "subjects", "roll"}, "spec")
    if _int(ctx, top, "version", "spec", lo=1, hi=1) is None:
        pass
    session_meta: dict[str, Any] = {}
    sm = _mapping(ctx, top["session"], "session") if "session" in top else None
    if "session" not in top:
        ctx.error(None, "session", "is required")
    if sm is not None:
        _unknown(ctx, sm, {"code", "name", "kind", "year", "sitting"}, "session")
        session_meta = {
            "code": _text(ctx, sm, "code", "session", max_len=40),
            "name": _text(ctx, sm, "name", "session"),
            "kind": _choice(ctx, sm, "kind", "session", SESSION_KINDS, "self_taught"),
            "year": _int(ctx, sm, "year", "session", lo=2000, hi=2099),
            "sitting": _int(ctx, sm, "sitting", "session", lo=1, hi=4),
        }
    subjects: list[SubjectSpec] = []
    seq = top.get("subjects")
    if not isinstance(seq, yaml.SequenceNode) or not seq.value:
        ctx.error(seq, "subjects", "a non-empty list of subjects is required")
    else:
        for index, child in enumerate(seq.value):
            parsed = _parse_subject(ctx, child, f"subjects[{index}]", path.parent)
            if parsed:
                subjects.append(parsed)
    codes = [s.code for s in subjects]
    for code in {c for c in codes if codes.count(c) > 1}:
        ctx.error(seq, "subjects", f"subject code {code} is used twice")
    for index, subject in enumerate(subjects):
        if (session_meta.get("kind") == "self_taught" and subject.process_weight_pm is not None
                and subject.process_weight_pm > 300):
            ctx.error(None, f"subjects[{index}].process_weight",
                      "self-taught exams allow a process weight of at most 30% (R-PROC-1)")
        if subject.template_body is not None and template_inspector is not None:
            try:
                objective, subjective = template_inspector(subject.template_body)
            except ValueError as exc:
                ctx.error(None, f"subjects[{index}].card_template", f"invalid template: {exc}")
                continue
            for item in subject.items:
                known = objective if item.kind == "objective" else subjective
                if item.code not in known:
                    ctx.error(None, f"subjects[{index}].{item.kind}",
                              f"item {item.code} has no {item.kind} region on the card template")
    candidates = []
    if "roll" in top:
        candidates = _parse_roll(ctx, top["roll"], "roll", path.parent, session_meta, set(codes))
    if ctx.errors:
        raise SpecError(ctx.errors)
    return ExamSpec(source=path, sha256=hashlib.sha256(raw).hexdigest(), session=session_meta,
                    subjects=subjects, candidates=candidates)


# --------------------------------------------------------------------------- import

def _template_row(session: Session, spec: SubjectSpec) -> CardTemplate | None:
    if spec.template_body is None:
        return None
    try:
        return templates.store_template(session, spec.template_body)
    except templates.TemplateRefused as exc:
        raise SpecError([f"{spec.template_path}: {exc}"]) from exc


def import_spec(db, path: Path, *, actor_id: int | None = None,
                template_inspector: TemplateInspector | None = None) -> dict[str, Any]:
    """Validate then import in one transaction: on any error nothing is imported."""
    spec = parse_spec(path, template_inspector)
    with db.write() as session:
        if session.scalar(select(ExamSession.id).where(ExamSession.code == spec.session["code"])):
            raise SpecError([f"{path}: session.code: session {spec.session['code']} already exists; nothing imported"])
        exam = ExamSession(**spec.session)
        session.add(exam)
        session.flush()
        subject_ids: dict[str, int] = {}
        item_count = 0
        for s in spec.subjects:
            template = _template_row(session, s)
            subject = Subject(session_id=exam.id, code=s.code, name=s.name,
                              card_template_id=template.id if template else None,
                              pass_mark_cp=s.pass_mark_cp, total_rounding=s.total_rounding,
                              total_places=s.total_places, process_weight_pm=s.process_weight_pm,
                              double_pass=s.double_pass, pass_band_cp=s.pass_band_cp)
            session.add(subject)
            session.flush()
            subject_ids[s.code] = subject.id
            for ordinal, it in enumerate(s.items, start=1):
                policy_id = None
                if it.kind == "subjective":
                    policy_id = policy.ensure_policy(session, it.policy_name or policy.DEFAULT_NAME,
                                                     it.policy_params).id
                session.add(Item(subject_id=subject.id, code=it.code, ordinal=ordinal, kind=it.kind,
                                 title=it.title, max_cp=it.max_cp, options=it.options,
                                 multi_select=it.multi_select, multi_rule=it.multi_rule,
                                 partial_cp=it.partial_cp, step_cp=it.step_cp,
                                 threshold_cp=it.threshold_cp, double_marked=it.double_marked,
                                 policy_id=policy_id, required_qualification=it.required_qualification,
                                 daily_cap=it.daily_cap))
                item_count += 1
        for c in spec.candidates:
            cand = Candidate(session_id=exam.id, candidate_no=c.candidate_no, name=c.name,
                             school_code=c.school_code, region_code=c.region_code)
            session.add(cand)
            session.flush()
            for code in c.subjects:
                session.add(Registration(candidate_id=cand.id, subject_id=subject_ids[code]))
        summary = {"session": exam.code, "subjects": len(spec.subjects), "items": item_count,
                   "candidates": len(spec.candidates), "spec_sha256": spec.sha256}
        ledger.append(session, actor_id=actor_id, action="exam.imported", entity="exam_session",
                      entity_id=exam.id, data=summary)
    return summary
