"""Card templates: loading, validation, content hash and geometry helpers.

A template is a JSON document (see docs/card-template.schema.json and docs/omr.md).
All template coordinates are millimetres on the printed page, origin at the top-left
corner, x to the right and y downwards.

R-OMR-1: a batch freezes the template it reads with; the template is identified by
``content_hash`` (sha256 of a canonical JSON dump) which the core recomputes
independently, so the definition in ``content_hash`` must not change.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

FORMAT = "omr-card-template/1"
CORNERS = ("top_left", "top_right", "bottom_right", "bottom_left")  # clockwise
EDGES = ("top", "bottom", "left", "right")
QUESTION_KINDS = ("single", "multiple")
DIGITS = "0123456789"


class TemplateError(ValueError):
    """A template is malformed; the message names the JSON path of the problem."""


def content_hash(obj: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON dump of a parsed template (R-OMR-1).

    Keep exactly this definition: the core computes the same hash independently.
    """
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def mm_to_px(value_mm: float, dpi: float) -> float:
    """Millimetres to pixels at ``dpi`` (no rounding)."""
    return float(value_mm) * float(dpi) / 25.4


def px_per_mm(dpi: float) -> float:
    return float(dpi) / 25.4


def page_size_px(template: "Template", dpi: float) -> tuple[int, int]:
    """(width, height) in whole pixels of the page rendered at ``dpi``."""
    w_mm, h_mm = template.page_size_mm
    return int(round(mm_to_px(w_mm, dpi))), int(round(mm_to_px(h_mm, dpi)))


@dataclass(frozen=True)
class Fiducial:
    corner: str
    centre_mm: tuple[float, float]
    coded: bool


@dataclass(frozen=True)
class TimingEdge:
    edge: str
    from_mm: tuple[float, float]
    to_mm: tuple[float, float]
    count: int
    size_mm: tuple[float, float]

    def centres_mm(self) -> list[tuple[float, float]]:
        (x0, y0), (x1, y1) = self.from_mm, self.to_mm
        n = self.count
        return [(x0 + (x1 - x0) * i / (n - 1), y0 + (y1 - y0) * i / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class DigitGrid:
    """A bubble grid for a number: one column per digit position, rows 0..9 downwards."""
    name: str
    origin_mm: tuple[float, float]
    digits: int
    column_pitch_mm: float
    row_pitch_mm: float

    def centre_mm(self, position: int, digit: int) -> tuple[float, float]:
        return (self.origin_mm[0] + position * self.column_pitch_mm,
                self.origin_mm[1] + digit * self.row_pitch_mm)


@dataclass(frozen=True)
class ObjectiveBlock:
    """Questions in rows (``question_pitch_mm`` downwards), options across."""
    id: str
    kind: str
    codes: tuple[str, ...]
    options: str
    origin_mm: tuple[float, float]
    option_pitch_mm: float
    question_pitch_mm: float

    def centre_mm(self, question_index: int, option_index: int) -> tuple[float, float]:
        return (self.origin_mm[0] + option_index * self.option_pitch_mm,
                self.origin_mm[1] + question_index * self.question_pitch_mm)


@dataclass(frozen=True)
class Region:
    rect_mm: tuple[float, float, float, float]  # x, y, width, height
    item: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Page:
    code: int
    candidate_number: DigitGrid | None
    subject_code: DigitGrid | None
    absence_mm: tuple[float, float] | None
    barcode_rect_mm: tuple[float, float, float, float] | None
    objective_blocks: tuple[ObjectiveBlock, ...]
    answer_regions: tuple[Region, ...]
    identity_regions: tuple[Region, ...]


@dataclass(frozen=True)
class Template:
    id: str
    version: str
    title: str
    page_size_mm: tuple[float, float]
    bubble_radius_mm: float
    bubble_line_mm: float
    fiducials: tuple[Fiducial, ...]  # clockwise from top_left
    fiducial_size_mm: float
    fiducial_hole_mm: float
    timing_edges: tuple[TimingEdge, ...]
    page_code_bits_mm: tuple[tuple[float, float], ...]
    page_code_size_mm: float
    calibration_filled_mm: tuple[float, float]
    calibration_blank_mm: tuple[float, float]
    pages: tuple[Page, ...]
    content_hash: str
    source: Mapping[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    # -- item codes for the exam import to cross-check against the exam specification --
    @property
    def objective_items(self) -> dict[str, dict[str, Any]]:
        """Objective item code -> {"kind", "options", "page"} in card order."""
        out: dict[str, dict[str, Any]] = {}
        for page in self.pages:
            for block in page.objective_blocks:
                for code in block.codes:
                    out[code] = {"kind": block.kind, "options": block.options, "page": page.code}
        return out

    @property
    def subjective_items(self) -> dict[str, list[dict[str, Any]]]:
        """Subjective item code -> list of {"page", "rect_mm"} regions in card order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for page in self.pages:
            for region in page.answer_regions:
                out.setdefault(region.item or "", []).append(
                    {"page": page.code, "rect_mm": list(region.rect_mm)})
        return out

    def page(self, code: int) -> Page:
        for page in self.pages:
            if page.code == code:
                return page
        raise KeyError(f"template {self.id} has no page with code {code}")

    @property
    def page_codes(self) -> tuple[int, ...]:
        return tuple(p.code for p in self.pages)


def item_codes(source: str | Path | Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(objective item codes, subjective item codes) of a template, for the exam import
    to cross-check against the exam specification. Raises TemplateError if invalid."""
    t = source if isinstance(source, Template) else load_template(source)
    return set(t.objective_items), set(t.subjective_items)


# ----------------------------------------------------------------------------- loading

def load_template(source: str | Path | Mapping[str, Any]) -> Template:
    """Load and validate a template from a JSON file path or an already parsed dict.

    Raises TemplateError with the JSON path of the first problem found.
    """
    if isinstance(source, Mapping):
        obj = json.loads(json.dumps(source))  # detach from the caller's object
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read template {path}: {exc}") from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise TemplateError("$: a template must be a JSON object")
    return _parse(obj)


def _req(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise TemplateError(f"{where}.{key}: required")
    return obj[key]


def _num(value: Any, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TemplateError(f"{where}: must be a number, got {value!r}")
    if positive and value <= 0:
        raise TemplateError(f"{where}: must be > 0, got {value!r}")
    return float(value)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TemplateError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    return value


def _pair(value: Any, where: str, positive: bool = False) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TemplateError(f"{where}: must be [x, y], got {value!r}")
    return (_num(value[0], f"{where}[0]", positive), _num(value[1], f"{where}[1]", positive))


def _rect(value: Any, where: str) -> tuple[float, float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise TemplateError(f"{where}: must be [x, y, width, height], got {value!r}")
    x, y = _num(value[0], f"{where}[0]"), _num(value[1], f"{where}[1]")
    w, h = _num(value[2], f"{where}[2]", True), _num(value[3], f"{where}[3]", True)
    return (x, y, w, h)


def _check_on_page(point: tuple[float, float], size: tuple[float, float], where: str,
                   margin: float = 0.0) -> None:
    x, y = point
    if not (margin <= x <= size[0] - margin and margin <= y <= size[1] - margin):
        raise TemplateError(f"{where}: {list(point)} lies outside the page {list(size)} mm")


def _check_rect_on_page(rect: tuple[float, float, float, float], size: tuple[float, float],
                        where: str) -> None:
    x, y, w, h = rect
    if x < 0 or y < 0 or x + w > size[0] or y + h > size[1]:
        raise TemplateError(f"{where}: {list(rect)} extends outside the page {list(size)} mm")


def _parse(obj: dict[str, Any]) -> Template:
    if obj.get("format") != FORMAT:
        raise TemplateError(f"$.format: must be {FORMAT!r}, got {obj.get('format')!r}")
    tid = _req(obj, "id", "$")
    if not isinstance(tid, str) or not tid:
        raise TemplateError("$.id: must be a non-empty string")
    version = str(obj.get("version", ""))
    size = _pair(_req(obj, "page_size_mm", "$"), "$.page_size_mm", positive=True)
    bubble = _req(obj, "bubble", "$")
    radius = _num(_req(bubble, "radius_mm", "$.bubble"), "$.bubble.radius_mm", True)
    line = _num(bubble.get("line_mm", 0.25), "$.bubble.line_mm", True)
    if line >= radius / 2:
        raise TemplateError("$.bubble.line_mm: must be less than half the radius")

    # Four orientation-coded fiducials: exactly one differs (has a hole) so that the
    # page orientation 0/90/180/270 follows from the marks alone.
    fids_raw = _req(obj, "fiducials", "$")
    if not isinstance(fids_raw, list) or len(fids_raw) != 4:
        raise TemplateError("$.fiducials: must list exactly 4 corner fiducials")
    by_corner: dict[str, Fiducial] = {}
    for i, f in enumerate(fids_raw):
        where = f"$.fiducials[{i}]"
        corner = _req(f, "corner", where)
        if corner not in CORNERS:
            raise TemplateError(f"{where}.corner: must be one of {CORNERS}, got {corner!r}")
        if corner in by_corner:
            raise TemplateError(f"{where}.corner: duplicate corner {corner!r}")
        centre = _pair(_req(f, "centre_mm", where), f"{where}.centre_mm")
        _check_on_page(centre, size, f"{where}.centre_mm")
        by_corner[corner] = Fiducial(corner, centre, bool(f.get("coded", False)))
    fiducials = tuple(by_corner[c] for c in CORNERS)
    if sum(f.coded for f in fiducials) != 1:
        raise TemplateError("$.fiducials: exactly one fiducial must be coded (orientation mark)")
    tl, tr, br, bl = (f.centre_mm for f in fiducials)
    if not (tl[0] < tr[0] and bl[0] < br[0] and tl[1] < bl[1] and tr[1] < br[1]):
        raise TemplateError("$.fiducials: corners are not in top_left/top_right/bottom_right/"
                            "bottom_left positions")
    fsize = _num(obj.get("fiducial_size_mm", 8.0), "$.fiducial_size_mm", True)
    fhole = _num(obj.get("fiducial_hole_mm", fsize * 0.45), "$.fiducial_hole_mm", True)
    if fhole >= fsize * 0.7:
        raise TemplateError("$.fiducial_hole_mm: must be smaller than 0.7 x fiducial_size_mm")

    edges_raw = _req(obj, "timing_marks", "$")
    if not isinstance(edges_raw, list):
        raise TemplateError("$.timing_marks: must be a list of edges")
    edges: list[TimingEdge] = []
    for i, e in enumerate(edges_raw):
        where = f"$.timing_marks[{i}]"
        name = _req(e, "edge", where)
        if name not in EDGES:
            raise TemplateError(f"{where}.edge: must be one of {EDGES}, got {name!r}")
        if any(x.edge == name for x in edges):
            raise TemplateError(f"{where}.edge: duplicate edge {name!r}")
        a = _pair(_req(e, "from_mm", where), f"{where}.from_mm")
        b = _pair(_req(e, "to_mm", where), f"{where}.to_mm")
        _check_on_page(a, size, f"{where}.from_mm")
        _check_on_page(b, size, f"{where}.to_mm")
        horizontal = name in ("top", "bottom")
        if (horizontal and a[1] != b[1]) or (not horizontal and a[0] != b[0]):
            raise TemplateError(f"{where}: marks of edge {name!r} must lie on one "
                                f"{'horizontal' if horizontal else 'vertical'} line")
        edges.append(TimingEdge(name, a, b, _int(_req(e, "count", where), f"{where}.count", 3),
                                _pair(_req(e, "size_mm", where), f"{where}.size_mm", True)))
    if sorted(e.edge for e in edges) != sorted(EDGES):
        # Method B registers from the timing marks alone and needs all four edges.
        raise TemplateError("$.timing_marks: all four edges (top, bottom, left, right) are required")
    edges.sort(key=lambda e: EDGES.index(e.edge))

    pc = _req(obj, "page_code", "$")
    bits = _req(pc, "bits_mm", "$.page_code")
    if not isinstance(bits, list) or not 2 <= len(bits) <= 8:
        raise TemplateError("$.page_code.bits_mm: must list 2..8 bit positions "
                            "(the last one is an even-parity bit)")
    bit_pos = tuple(_pair(b, f"$.page_code.bits_mm[{i}]") for i, b in enumerate(bits))
    for i, b in enumerate(bit_pos):
        _check_on_page(b, size, f"$.page_code.bits_mm[{i}]")
    pc_size = _num(pc.get("size_mm", 3.0), "$.page_code.size_mm", True)

    cal = _req(obj, "calibration", "$")
    cal_filled = _pair(_req(cal, "filled_mm", "$.calibration"), "$.calibration.filled_mm")
    cal_blank = _pair(_req(cal, "blank_mm", "$.calibration"), "$.calibration.blank_mm")
    _check_on_page(cal_filled, size, "$.calibration.filled_mm")
    _check_on_page(cal_blank, size, "$.calibration.blank_mm")

    pages_raw = _req(obj, "pages", "$")
    if not isinstance(pages_raw, list) or not pages_raw:
        raise TemplateError("$.pages: must be a non-empty list")
    max_code = 2 ** (len(bit_pos) - 1) - 1
    pages: list[Page] = []
    seen_codes: set[str] = set()
    for i, p in enumerate(pages_raw):
        pages.append(_parse_page(p, f"$.pages[{i}]", size, max_code, seen_codes))
    if len({p.code for p in pages}) != len(pages):
        raise TemplateError("$.pages: page codes must be unique")
    for page in pages:
        for region in page.answer_regions:
            if region.item in seen_codes:
                raise TemplateError(f"$.pages: item code {region.item!r} is both objective "
                                    "and subjective")

    return Template(
        id=tid, version=version, title=str(obj.get("title", "")), page_size_mm=size,
        bubble_radius_mm=radius, bubble_line_mm=line, fiducials=fiducials,
        fiducial_size_mm=fsize, fiducial_hole_mm=fhole, timing_edges=tuple(edges),
        page_code_bits_mm=bit_pos, page_code_size_mm=pc_size,
        calibration_filled_mm=cal_filled, calibration_blank_mm=cal_blank,
        pages=tuple(pages), content_hash=content_hash(obj), source=obj)


def _parse_grid(raw: Any, name: str, where: str, size: tuple[float, float]) -> DigitGrid:
    grid = DigitGrid(name, _pair(_req(raw, "origin_mm", where), f"{where}.origin_mm"),
                     _int(_req(raw, "digits", where), f"{where}.digits", 1),
                     _num(_req(raw, "column_pitch_mm", where), f"{where}.column_pitch_mm", True),
                     _num(_req(raw, "row_pitch_mm", where), f"{where}.row_pitch_mm", True))
    _check_on_page(grid.centre_mm(grid.digits - 1, 9), size, f"{where} (last bubble)")
    return grid


def _parse_page(p: Any, where: str, size: tuple[float, float], max_code: int,
                objective_codes: set[str]) -> Page:
    if not isinstance(p, dict):
        raise TemplateError(f"{where}: must be an object")
    code = _int(_req(p, "code", where), f"{where}.code", 1)
    if code > max_code:
        raise TemplateError(f"{where}.code: {code} does not fit the page-code bits "
                            f"(max {max_code})")
    cn = p.get("candidate_number")
    candidate = _parse_grid(cn, "candidate_number", f"{where}.candidate_number", size) if cn else None
    if candidate is not None and candidate.digits != 12:
        # R-OMR-8: candidate numbers have exactly 12 digits.
        raise TemplateError(f"{where}.candidate_number.digits: must be 12 (R-OMR-8)")
    sc = p.get("subject_code")
    subject = _parse_grid(sc, "subject_code", f"{where}.subject_code", size) if sc else None
    absence = None
    if p.get("absence") is not None:
        absence = _pair(_req(p["absence"], "centre_mm", f"{where}.absence"),
                        f"{where}.absence.centre_mm")
        _check_on_page(absence, size, f"{where}.absence.centre_mm")
    barcode = None
    if p.get("barcode") is not None:
        barcode = _rect(_req(p["barcode"], "rect_mm", f"{where}.barcode"),
                        f"{where}.barcode.rect_mm")
        _check_rect_on_page(barcode, size, f"{where}.barcode.rect_mm")

    blocks: list[ObjectiveBlock] = []
    for j, b in enumerate(p.get("objective_blocks", [])):
        bw = f"{where}.objective_blocks[{j}]"
        kind = _req(b, "kind", bw)
        if kind not in QUESTION_KINDS:
            raise TemplateError(f"{bw}.kind: must be one of {QUESTION_KINDS}, got {kind!r}")
        if "codes" in b:
            codes = b["codes"]
            if not isinstance(codes, list) or not codes or not all(
                    isinstance(c, str) and c for c in codes):
                raise TemplateError(f"{bw}.codes: must be a non-empty list of strings")
        else:
            first = _int(_req(b, "first", bw), f"{bw}.first", 0)
            count = _int(_req(b, "count", bw), f"{bw}.count", 1)
            codes = [str(first + k) for k in range(count)]
        options = _req(b, "options", bw)
        if not isinstance(options, str) or not 2 <= len(options) <= 10 or len(set(options)) != len(options):
            raise TemplateError(f"{bw}.options: must be 2..10 distinct option letters, got {options!r}")
        block = ObjectiveBlock(str(b.get("id", f"block-{j}")), kind, tuple(codes), options,
                               _pair(_req(b, "origin_mm", bw), f"{bw}.origin_mm"),
                               _num(_req(b, "option_pitch_mm", bw), f"{bw}.option_pitch_mm", True),
                               _num(_req(b, "question_pitch_mm", bw), f"{bw}.question_pitch_mm", True))
        _check_on_page(block.centre_mm(len(codes) - 1, len(options) - 1), size, f"{bw} (last bubble)")
        for c in codes:
            if c in objective_codes:
                raise TemplateError(f"{bw}.codes: duplicate objective item code {c!r}")
            objective_codes.add(c)
        blocks.append(block)

    answer_regions: list[Region] = []
    for j, r in enumerate(p.get("answer_regions", [])):
        rw = f"{where}.answer_regions[{j}]"
        item = _req(r, "item", rw)
        if not isinstance(item, str) or not item:
            raise TemplateError(f"{rw}.item: must be a non-empty string")
        rect = _rect(_req(r, "rect_mm", rw), f"{rw}.rect_mm")
        _check_rect_on_page(rect, size, f"{rw}.rect_mm")
        answer_regions.append(Region(rect, item=item))
    identity_regions: list[Region] = []
    for j, r in enumerate(p.get("identity_regions", [])):
        rw = f"{where}.identity_regions[{j}]"
        rect = _rect(_req(r, "rect_mm", rw), f"{rw}.rect_mm")
        _check_rect_on_page(rect, size, f"{rw}.rect_mm")
        identity_regions.append(Region(rect, label=str(r.get("label", ""))))
    return Page(code, candidate, subject, absence, barcode, tuple(blocks),
                tuple(answer_regions), tuple(identity_regions))
