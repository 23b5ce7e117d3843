"""``read_card``: one scanned page + template -> a JSON-serialisable reading.

Pipeline (docs/omr.md): header-checked decode -> local paper-level map ->
orientation-coded fiducials -> method A or B registration -> page code -> per-bubble
patches -> local search -> method A or B fill measure -> per-card calibration ->
decisions and reason codes. Same method on the same input gives byte-identical JSON
(``reading_json``): all floats are rounded to fixed decimals.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Collection

import numpy as np

from . import decide as dec
from .flags import Reason
from .ids import describe_candidate_number, read_code128, validate_candidate_number
from .imageio import Decoded, decode_bytes, from_array
from .layout import Group, PageLayout, page_layout
from .measure import bubble_patches, find_streaks, local_search, search_reach, square_darkness
from .methods import measure_a, measure_b
from .registration import Registration, RegistrationError, find_fiducials, register_a, register_b
from .settings import DEFAULT_SETTINGS, RECOGNITION_VERSIONS, Settings
from .template import Template
from .workimage import WorkImage, build_work_image

ImageInput = bytes | bytearray | memoryview | np.ndarray | str | Path


def _f(x: float, nd: int = 4) -> float:
    v = round(float(x), nd)
    return 0.0 if v == 0 else v


def _flist(a: np.ndarray, nd: int = 4) -> list[float]:
    # np.round is exact-decimal-stable for our magnitudes; "+ 0.0" turns -0.0 into 0.0
    return (np.round(np.asarray(a, dtype=np.float64), nd) + 0.0).tolist()


def reading_json(reading: dict[str, Any]) -> str:
    """Canonical JSON text of a reading (stable bytes for identical inputs)."""
    return json.dumps(reading, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Flags:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, reason: Reason | str, item: str | None = None, detail: str = "") -> None:
        code = reason.value if isinstance(reason, Reason) else str(reason)
        entry = {"code": code}
        if item is not None:
            entry["item"] = item
        if detail:
            entry["detail"] = detail
        if entry not in self.items:
            self.items.append(entry)

    def sorted(self) -> list[dict[str, str]]:
        return sorted(self.items, key=lambda e: (e["code"], e.get("item", ""), e.get("detail", "")))


def _base(template: Template, method: str, settings: Settings, dec_: Decoded | None) -> dict[str, Any]:
    return {
        "recognition_version": RECOGNITION_VERSIONS[method],
        "method": method,
        "settings_hash": settings.hash,
        "template_id": template.id,
        "template_hash": template.content_hash,
        "input": {
            "sha256": dec_.sha256 if dec_ else None,
            "bytes": dec_.n_bytes if dec_ else 0,
            "format": dec_.format if dec_ else None,
            "width": dec_.width if dec_ else None,
            "height": dec_.height if dec_ else None,
        },
    }


def _error(base: dict[str, Any], reason: Reason, detail: str) -> dict[str, Any]:
    base.update({"status": "error", "error": {"reason": reason.value, "detail": detail},
                 "flags": [{"code": reason.value, "detail": detail}]})
    return base


def _decode(image: ImageInput, settings: Settings, sha256: str | None) -> Decoded:
    if isinstance(image, np.ndarray):
        return from_array(image, settings)
    if isinstance(image, (str, Path)):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            return Decoded(None, None, None, 0, error=Reason.NOT_AN_IMAGE, detail=f"cannot read file: {exc}")
        return decode_bytes(data, settings, sha256)
    return decode_bytes(bytes(image), settings, sha256)


def read_card(image: ImageInput, template: Template, method: str = "a", *,
              page: int | None = None, roll: Collection[str] | None = None,
              expected_subject: str | None = None,
              settings: Settings = DEFAULT_SETTINGS,
              include_geometry: bool = True,
              input_sha256: str | None = None) -> dict[str, Any]:
    """Read one scanned page. Never raises for bad input: returns a reading with
    ``status`` "error" and ``error.reason`` instead.

    method: "a" (fiducial+timing RANSAC homography, inner-square mean darkness) or
            "b" (timing-mark trimmed-LSQ homography + Coons residuals, dark-pixel shares).
    page:   page code expected (checked against the printed page code), optional.
    roll:   candidate numbers of the batch roll (R-OMR-8), optional.
    expected_subject: subject code of the batch, optional.
    input_sha256: sha256 hex digest of the input bytes (bytes or file input) when the caller
            already computed it; it is recorded as is, not checked. Computed when absent.
    """
    if method not in RECOGNITION_VERSIONS:
        raise ValueError(f"method must be 'a' or 'b', got {method!r}")
    decoded = _decode(image, settings, input_sha256)
    base = _base(template, method, settings, decoded)
    if decoded.error is not None:
        return _error(base, decoded.error, decoded.detail)
    try:
        return _read(decoded, template, method, page, roll, expected_subject, settings, base,
                     include_geometry)
    except RegistrationError as exc:
        return _error(base, exc.reason, exc.detail)


def _read(decoded: Decoded, template: Template, method: str, page: int | None,
          roll: Collection[str] | None, expected_subject: str | None, settings: Settings,
          out: dict[str, Any], include_geometry: bool) -> dict[str, Any]:
    grey = decoded.grey
    assert grey is not None
    h, w = grey.shape
    pw, ph = template.page_size_mm
    t_aspect = min(pw, ph) / max(pw, ph)
    aspect = min(w, h) / max(w, h)
    if not (0.85 * t_aspect <= aspect <= min(1.0, 1.25 * t_aspect)):
        raise RegistrationError(Reason.WRONG_PAGE_SIZE,
                                f"image aspect {aspect:.3f}, template page aspect {t_aspect:.3f}")
    dpi_guess = decoded.dpi_hint or float(np.sqrt(w * h / (pw * ph)) * 25.4)
    work = build_work_image(grey, dpi_guess, settings.work_dpi)
    _check_blank(work, settings, paper_only=True)
    try:
        fid = find_fiducials(work, template, dpi_guess)
    except RegistrationError:
        # Found corner marks are ink, so a page is only worth the whole-page ink sample
        # (blank page vs. marks not found) when the marks were not found.
        _check_blank(work, settings)
        raise
    any_layout = _layout(template, template.pages[0].code)[0]
    register = register_a if method == "a" else register_b
    reg = register(work, template, any_layout, fid, settings.max_rms_mm, settings.min_timing_fraction)
    flags = _Flags()
    for reason, detail in reg.flags:
        flags.add(reason, detail=detail)
    if not fid.found.all():
        lost = [template.fiducials[j].corner for j in range(4) if not fid.found[j]]
        flags.add(Reason.FIDUCIAL_MISSING, detail=", ".join(lost))

    # Page code: printed bits (data LSB first, last bit even parity).
    page_info, layout = _page(work, template, reg, fid, page, flags)
    ppmm = reg.px_per_mm
    dpi = ppmm * 25.4
    # page size check: the page at the measured scale must fit the scan
    if max(w, h) < 0.93 * max(pw, ph) * ppmm or min(w, h) < 0.93 * min(pw, ph) * ppmm:
        raise RegistrationError(Reason.WRONG_PAGE_SIZE,
                                f"scan {w}x{h} px is smaller than the page at {dpi:.0f} dpi")

    radius = template.bubble_radius_mm * ppmm
    line = template.bubble_line_mm * ppmm
    search = max(1, int(round(settings.local_search_mm * ppmm)))
    mapped = reg.map(layout.bubbles_mm)
    patches = bubble_patches(work, mapped, search_reach(radius, line, search))
    centres, shifts = local_search(work, patches, radius, line, search, layout.bubble_block)
    # A bubble 3/4 of the search radius away from where a sub-0.1 mm registration put
    # it means local paper distortion: flag it rather than trust the window edge.
    at_edge = (np.abs(shifts) >= max(1, 0.75 * search)).any(axis=1)

    measured = (measure_a if method == "a" else measure_b)(work, patches, centres, radius, layout, fid, settings)
    primary, faint, cal = measured.primary, measured.faint, measured.calibration
    states, margins = dec.classify(primary, faint, cal)
    if not cal.ok:
        flags.add(Reason.CALIBRATION_FAILED, detail=cal.detail)
    if measured.low_contrast:
        flags.add(Reason.LOW_CONTRAST, detail=f"noise {cal.noise:.4f}, mark level {cal.mark_level:.3f}")

    streaks = find_streaks(work, settings.streak_contrast, settings.streak_coverage)
    on_streak = np.zeros(len(centres), dtype=bool)
    if streaks:
        flags.add(Reason.SCANNER_STREAK, detail=", ".join(f"x={a}-{b}" for a, b in streaks))
        reach = radius * 0.8 + 1
        for a, b in streaks:
            on_streak |= (centres[:, 0] + reach >= a) & (centres[:, 0] - reach <= b)

    objective, absence, digit_cols = _decide_groups(
        template, layout.page_code, states, margins, at_edge, on_streak,
        primary, measured.raw, settings.min_confidence, flags)

    out.update({
        "status": "ok",
        "error": None,
        "orientation": reg.orientation,
        "page": page_info,
        "dpi": _f(dpi, 1),
        "alignment": {
            "rms_px": _f(reg.rms_px, 3), "rms_mm": _f(reg.rms_mm, 3), "max_px": _f(reg.max_px, 3),
            "fiducials_found": reg.fiducials_found, "timing_marks_found": reg.timing_found,
            "timing_marks_total": reg.timing_total,
            "local_shift_px_max": _f(float(np.abs(shifts).max()) if len(shifts) else 0.0, 1),
        },
        "calibration": {
            "blank_level": _f(cal.blank_level), "noise": _f(cal.noise), "mark_level": _f(cal.mark_level),
            "t_low": _f(cal.t_low), "t_high": _f(cal.t_high),
            "filled_bubble": _f(primary[layout.calibration_filled]),
            "blank_bubble": _f(faint[layout.calibration_blank]),
        },
        "streaks_px": [[a, b] for a, b in streaks],
    })
    out["calibration"].update({k: _f(v) for k, v in measured.cuts.items()})
    if include_geometry:
        out["geometry"] = {
            "h_mm_to_px": [[float(f"{v:.10g}") for v in row] for row in reg.h_mm_to_px.tolist()],
            "fiducials_px": _flist(fid.points_px, 2),
            "bubble_centres_px": _flist(centres, 1),
            # one character per bubble in layout order: 0 blank, 1 uncertain, 2 filled
            "bubble_states": (states.astype(np.uint8) + 48).tobytes().decode("ascii"),
        }

    pg = template.page(layout.page_code)
    out["candidate_number"] = _candidate(pg, digit_cols.get("candidate_number"), work, reg,
                                         roll, flags) if pg.candidate_number else None
    out["subject_code"] = _subject(digit_cols.get("subject_code"), expected_subject, flags) \
        if pg.subject_code else None
    out["absence"] = absence
    if absence is not None and absence["absent"] and any(q["chosen"] for q in objective.values()):
        flags.add(Reason.ABSENT_WITH_ANSWERS, item="absence")
    out["objective"] = objective
    out["flags"] = flags.sorted()
    out["status"] = "review" if out["flags"] else "ok"
    return out


_LOCAL_SHIFT, _STREAK_ON_BUBBLE = Reason.LOCAL_SHIFT.value, Reason.STREAK_ON_BUBBLE.value


def _decide_groups(template: Template, page_code: int, states: np.ndarray, margins: np.ndarray,
                   at_edge: np.ndarray, on_streak: np.ndarray, fill: np.ndarray,
                   raw: dict[str, np.ndarray], min_confidence: float, flags: _Flags
                   ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, list[dec.GroupDecision]]]:
    """Decide every question, digit column and the absence bubble of the page:
    (objective entries, absence entry, digit column decisions per grid)."""
    digit_cols: dict[str, list[dec.GroupDecision]] = {}
    objective: dict[str, Any] = {}
    absence: dict[str, Any] | None = None
    # Plain lists once: per-group work on tiny numpy arrays costs more than it saves.
    st_l, mg_l = states.tolist(), margins.tolist()
    # the usual card has no shifted or streaked bubble: no per-group look then
    edge_l = at_edge.tolist() if at_edge.any() else None
    streak_l = on_streak.tolist() if on_streak.any() else None
    fill_l = _flist(fill)
    raw_l = [(k, _flist(v)) for k, v in raw.items()]
    for g, sel, options, grid in _layout(template, page_code)[1]:
        d = dec.decide_group(g.kind, g.labels, st_l[sel], mg_l[sel], min_confidence)
        reasons = d.reasons
        if edge_l is not None and any(edge_l[sel]):
            reasons = reasons + [_LOCAL_SHIFT]
        if streak_l is not None and any(streak_l[sel]):
            reasons = reasons + [_STREAK_ON_BUBBLE]
        if g.kind == "digit":
            digit_cols.setdefault(grid, []).append(d)
            for r in reasons:
                flags.add(r, item=g.name)
            continue
        confidence = round(min(d.confidence, 99.0), 2)
        entry = {
            "state": d.state, "chosen": d.chosen, "uncertain": d.uncertain,
            "fill": fill_l[sel],
            "raw": {k: v[sel] for k, v in raw_l},
            "confidence": confidence if confidence else 0.0,      # no -0.0
            "flags": sorted(set(reasons)) if reasons else [],
        }
        if g.kind == "flag":
            absence = entry
            absence["absent"] = d.state == "single"
            if d.state == "ambiguous":
                flags.add(Reason.ABSENCE_UNCLEAR, item="absence")
            for r in reasons:
                if r not in ("faint_mark", "erasure_residue"):
                    flags.add(r, item="absence")
            continue
        entry["kind"] = g.kind
        entry["options"] = options
        objective[g.item or g.name] = entry
        for r in reasons:
            flags.add(r, item=g.item)
    return objective, absence, digit_cols


_Plan = tuple[tuple[Group, slice, str, str], ...]
_PLANS: dict[tuple[int, int], tuple[Template, PageLayout, _Plan]] = {}


def _layout(template: Template, page_code: int) -> tuple[PageLayout, _Plan]:
    """The page layout and its group plan, cached by template identity (an lru_cache
    hashes the whole frozen template on every call, ~80 hash calls per card).

    The plan lists the groups to decide, their bubbles as a slice (``page_layout`` lays
    out each group's bubbles one after the other, and slicing plain lists is several
    times cheaper than picking items one by one), the options string and the digit
    grid name."""
    hit = _PLANS.get((id(template), page_code))
    if hit is not None and hit[0] is template:
        return hit[1], hit[2]
    layout = page_layout(template, page_code)
    plan = []
    for g in layout.groups:
        if g.kind == "calibration":
            continue
        idx = g.index_list
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise ValueError(f"bubbles of group {g.name} are not consecutive in the layout")
        plan.append((g, slice(idx[0], idx[-1] + 1), "".join(g.labels), g.name.split(":")[0]))
    if len(_PLANS) >= 64:
        _PLANS.clear()
    # the entry holds the template, so its id cannot be reused while cached
    _PLANS[(id(template), page_code)] = (template, layout, tuple(plan))
    return layout, tuple(plan)


def _check_blank(work: WorkImage, settings: Settings, paper_only: bool = False) -> None:
    paper = float(work.paper_sample.mean())
    if paper_only and paper >= 40:
        return
    hs, ws = work.small_shape
    sample = work.small_at(np.arange(0, ws, 3)[None, :], np.arange(0, hs, 3)[:, None])
    paper_grid = work.paper_window(0, 0, ws, hs)[::3, ::3]
    share = float(np.count_nonzero(sample < paper_grid * 0.6)) / sample.size
    if share < settings.blank_page_ink or paper < 40:
        raise RegistrationError(Reason.BLANK_PAGE, f"dark share {share:.4f}, paper level {paper:.0f}")


def _page(work: WorkImage, template: Template, reg: Registration, fid: Any, page: int | None,
          flags: _Flags) -> tuple[dict[str, Any], PageLayout]:
    pts = reg.map(_layout(template, template.pages[0].code)[0].page_bits_mm)
    half = template.page_code_size_mm * 0.3 * reg.px_per_mm
    d = square_darkness(work, pts, half)
    ink = max(0.2, 1.0 - fid.ink_level / max(fid.paper_level, 1.0))
    v = d / ink
    # a handful of bits: plain Python
    bits = [int(x > 0.5) for x in v.tolist()]
    clear = all(x < 0.25 or x > 0.75 for x in v.tolist())
    data = bits[:-1]
    parity_ok = sum(data) % 2 == bits[-1]
    code = sum(b << i for i, b in enumerate(data))
    read_ok = clear and parity_ok and code in template.page_codes
    info: dict[str, Any] = {"code": code if read_ok else None, "bits": _flist(v, 3),
                            "expected": page}
    if read_ok:
        chosen = code
        if page is not None and page != code:
            flags.add(Reason.PAGE_CODE_MISMATCH, detail=f"printed page {code}, expected {page}")
    elif page is not None and page in template.page_codes:
        chosen = page
        flags.add(Reason.PAGE_CODE_UNCLEAR, detail=f"bits {info['bits']}")
    elif len(template.pages) == 1:
        chosen = template.pages[0].code
        flags.add(Reason.PAGE_CODE_UNCLEAR, detail=f"bits {info['bits']}")
    else:
        raise RegistrationError(Reason.UNKNOWN_PAGE, f"page code bits {info['bits']}")
    info["used"] = chosen
    return info, _layout(template, chosen)[0]


def _digits(cols: list[dec.GroupDecision]) -> tuple[str, bool]:
    s = "".join(c.chosen[0] if c.state == "single" and len(c.chosen) == 1 else "?" for c in cols)
    clear = all(c.state == "single" and not c.reasons for c in cols)
    return s, clear


def _candidate(pg: Any, cols: list[dec.GroupDecision] | None, work: WorkImage, reg: Registration,
               roll: Collection[str] | None, flags: _Flags) -> dict[str, Any]:
    grid, clear = _digits(cols or [])
    if not clear:
        flags.add(Reason.CANDIDATE_NUMBER_UNCLEAR, item="candidate_number", detail=grid)
    barcode = None
    barcodes: list[str] = []
    if pg.barcode_rect_mm is not None:
        x, y, bw, bh = pg.barcode_rect_mm
        corners = reg.map(np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]]))
        barcodes = read_code128(work.grey, corners, 2.0 * reg.px_per_mm,
                                upright=reg.orientation in (0, 180))
        barcode = barcodes[0] if len(barcodes) == 1 else None
        if barcode is None:
            flags.add(Reason.BARCODE_UNREADABLE, item="candidate_number",
                      detail="no label" if not barcodes else f"{len(barcodes)} labels")
    # The number is only taken when grid and label agree (or one is absent and the other
    # is clear); otherwise both are kept and people decide (R-OMR-7 technical correction).
    value: str | None
    if barcode is not None and clear:
        value = grid if grid == barcode else None
        if grid != barcode:
            flags.add(Reason.BARCODE_GRID_MISMATCH, item="candidate_number",
                      detail=f"grid {grid}, barcode {barcode}")
    elif clear:
        value = grid
    elif barcode is not None:
        value = barcode
    else:
        value = None
    problems = validate_candidate_number(value) if value is not None else []
    if problems:
        flags.add(Reason.CANDIDATE_NUMBER_INVALID, item="candidate_number", detail="; ".join(problems))
    on_roll = None
    if roll is not None and value is not None:
        on_roll = value in roll
        if not on_roll:
            flags.add(Reason.CANDIDATE_NOT_ON_ROLL, item="candidate_number", detail=value)
    return {"value": value, "grid": grid, "barcode": barcode, "valid": value is not None and not problems,
            "parts": describe_candidate_number(value) if value and not problems else None,
            "on_roll": on_roll}


def _subject(cols: list[dec.GroupDecision] | None, expected: str | None, flags: _Flags) -> dict[str, Any]:
    code, clear = _digits(cols or [])
    if not clear:
        flags.add(Reason.SUBJECT_CODE_UNCLEAR, item="subject_code", detail=code)
    if expected is not None and clear and code != expected:
        flags.add(Reason.SUBJECT_CODE_MISMATCH, item="subject_code", detail=f"{code} != {expected}")
    return {"value": code if clear else None, "grid": code}
