"""Printable blank cards: ``render_card`` draws one page as a grey numpy image and
``write_card`` writes every page as a PDF (one page each) or PNG files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import zxingcpp
from PIL import Image

from .template import Template, mm_to_px, page_size_px

INK = 0          # printed black
PAPER = 255
_SHIFT = 4       # sub-pixel precision of cv2 drawing (1/16 px)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def page_code_bits(code: int, n_bits: int) -> list[int]:
    """Data bits (LSB first) of ``code`` followed by one even-parity bit."""
    data = [(code >> i) & 1 for i in range(n_bits - 1)]
    return data + [sum(data) % 2]


class _Canvas:
    def __init__(self, template: Template, dpi: float) -> None:
        self.dpi = dpi
        w, h = page_size_px(template, dpi)
        self.img = np.full((h, w), PAPER, dtype=np.uint8)

    def p(self, v_mm: float) -> float:
        return mm_to_px(v_mm, self.dpi)

    def _fix(self, x_mm: float, y_mm: float) -> tuple[int, int]:
        # Pixel centres sit at integer coordinates: mm -> px maps 0 mm to the page edge,
        # which is pixel coordinate -0.5.
        return (int(round((self.p(x_mm) - 0.5) * (1 << _SHIFT))),
                int(round((self.p(y_mm) - 0.5) * (1 << _SHIFT))))

    def rect(self, cx: float, cy: float, w: float, h: float, value: int = INK) -> None:
        pts = np.array([self._fix(cx - w / 2, cy - h / 2), self._fix(cx + w / 2, cy - h / 2),
                        self._fix(cx + w / 2, cy + h / 2), self._fix(cx - w / 2, cy + h / 2)], np.int32)
        cv2.fillPoly(self.img, [pts], value, cv2.LINE_AA, _SHIFT)

    def outline(self, x: float, y: float, w: float, h: float, line_mm: float = 0.3) -> None:
        t = line_mm
        self.rect(x + w / 2, y + t / 2, w, t)
        self.rect(x + w / 2, y + h - t / 2, w, t)
        self.rect(x + t / 2, y + h / 2, t, h)
        self.rect(x + w - t / 2, y + h / 2, t, h)

    def circle(self, cx: float, cy: float, r: float, line_mm: float | None) -> None:
        centre = self._fix(cx, cy)
        if line_mm is None:
            cv2.circle(self.img, centre, int(round(self.p(r) * (1 << _SHIFT))), INK, -1, cv2.LINE_AA, _SHIFT)
        else:
            thick = max(1, int(round(self.p(line_mm))))
            cv2.circle(self.img, centre, int(round(self.p(r - line_mm / 2) * (1 << _SHIFT))), INK,
                       thick, cv2.LINE_AA, _SHIFT)

    def text(self, s: str, x_mm: float, y_mm: float, height_mm: float = 2.2,
             align: str = "left", value: int = INK) -> None:
        scale = self.p(height_mm) / 22.0
        thick = max(1, int(round(self.p(height_mm) / 12)))
        (tw, _), _ = cv2.getTextSize(s, _FONT, scale, thick)
        x = self.p(x_mm) - (tw if align == "right" else tw / 2 if align == "centre" else 0)
        cv2.putText(self.img, s, (int(round(x)), int(round(self.p(y_mm)))), _FONT, scale, value,
                    thick, cv2.LINE_AA)


def _draw_barcode(c: _Canvas, rect_mm: tuple[float, float, float, float], number: str) -> None:
    """Code128 bars centred in the label area, module width chosen to fill ~80 %."""
    code = zxingcpp.create_barcode(number, zxingcpp.BarcodeFormat.Code128)
    row = np.asarray(zxingcpp.write_barcode_to_image(code, scale=1, add_quiet_zones=False))
    modules = row[row.shape[0] // 2] < 128
    x, y, w, h = rect_mm
    module_mm = min(0.5, w * 0.85 / len(modules))
    bar_h = h * 0.62
    x0 = x + (w - module_mm * len(modules)) / 2
    c.img[int(c.p(y + 1)):int(c.p(y + 1 + bar_h)) + 1, int(c.p(x0 - 3)):int(c.p(x0 + module_mm * len(modules) + 3))] = PAPER
    # draw runs of dark modules as single rectangles
    i = 0
    while i < len(modules):
        if modules[i]:
            j = i
            while j < len(modules) and modules[j]:
                j += 1
            c.rect(x0 + (i + j) / 2 * module_mm, y + 1 + bar_h / 2, (j - i) * module_mm, bar_h)
            i = j
        else:
            i += 1
    c.text(number, x + w / 2, y + h - 1.5, 2.4, align="centre")


def render_card(template: Template, dpi: float = 200, page: int | None = None,
                candidate: str | None = None) -> np.ndarray:
    """A blank printable page (uint8 grey, white paper) at ``dpi``.

    ``page`` is a page code (default: the first page). With ``candidate`` a Code128
    label with that candidate number is pre-printed in the page's barcode area.
    """
    page_code = template.pages[0].code if page is None else page
    pg = template.page(page_code)
    c = _Canvas(template, dpi)
    r = template.bubble_radius_mm
    line = template.bubble_line_mm

    fs, hole = template.fiducial_size_mm, template.fiducial_hole_mm
    for f in template.fiducials:
        c.rect(f.centre_mm[0], f.centre_mm[1], fs, fs)
        if f.coded:  # the orientation code: a square hole in one corner mark
            c.rect(f.centre_mm[0], f.centre_mm[1], hole, hole, PAPER)
    for edge in template.timing_edges:
        for cx, cy in edge.centres_mm():
            c.rect(cx, cy, edge.size_mm[0], edge.size_mm[1])
    bits = page_code_bits(page_code, len(template.page_code_bits_mm))
    s = template.page_code_size_mm
    for (bx, by), bit in zip(template.page_code_bits_mm, bits):
        c.outline(bx - s / 2, by - s / 2, s, s, 0.3)
        if bit:
            c.rect(bx, by, s, s)
    c.text(f"P{page_code}", template.page_code_bits_mm[-1][0] + s, template.page_code_bits_mm[-1][1] + 1, 2.4)

    fx, fy = template.calibration_filled_mm
    bx, by = template.calibration_blank_mm
    c.circle(fx, fy, r, None)
    c.circle(bx, by, r, line)
    c.text("CAL", min(fx, bx) - r - 1.5, fy + 1, 2.2, align="right")

    title_y = template.fiducials[0].centre_mm[1] + 13
    c.text(template.title, template.page_size_mm[0] / 2, title_y, 3.6, align="centre")
    c.text(f"{template.id} {template.version}  page {page_code}", template.page_size_mm[0] / 2,
           title_y + 5, 2.2, align="centre")

    for grid, caption in ((pg.candidate_number, "CANDIDATE NO."), (pg.subject_code, "SUBJECT CODE")):
        if grid is None:
            continue
        x0, y0 = grid.origin_mm
        c.text(caption, x0 - r, y0 - 16, 2.4)
        for pos in range(grid.digits):   # write-in boxes above the columns
            cx = x0 + pos * grid.column_pitch_mm
            c.outline(cx - grid.column_pitch_mm / 2 + 0.4, y0 - 13.5, grid.column_pitch_mm - 0.8, 7, 0.2)
        for d in range(10):
            c.text(str(d), x0 - r - 1.5, y0 + d * grid.row_pitch_mm + 1.1, 2.2, align="right")
            for pos in range(grid.digits):
                c.circle(*grid.centre_mm(pos, d), r, line)
    if pg.absence_mm is not None:
        ax, ay = pg.absence_mm
        c.circle(ax, ay, r, line)
        c.text("ABSENT", ax + r + 1.5, ay + 1.1, 2.4)
    if pg.barcode_rect_mm is not None:
        x, y, w, h = pg.barcode_rect_mm
        c.outline(x, y, w, h, 0.2)
        if candidate:
            _draw_barcode(c, pg.barcode_rect_mm, candidate)
        else:
            c.text("BARCODE LABEL", x + w / 2, y + h / 2 + 1, 2.4, align="centre")

    for block in pg.objective_blocks:
        x0, y0 = block.origin_mm
        c.text("MULTI" if block.kind == "multiple" else "", x0 - 8, y0 - 6.5, 2.0)
        for oi, opt in enumerate(block.options):
            c.text(opt, x0 + oi * block.option_pitch_mm, y0 - 3.8, 2.2, align="centre")
        for qi, code in enumerate(block.codes):
            c.text(code, x0 - r - 1.8, y0 + qi * block.question_pitch_mm + 1.1, 2.2, align="right")
            for oi in range(len(block.options)):
                c.circle(*block.centre_mm(qi, oi), r, line)

    for region in pg.answer_regions:
        x, y, w, h = region.rect_mm
        c.outline(x, y, w, h, 0.3)
        c.text(f"{region.item}.", x + 1.5, y + 4.0, 2.6)
    for region in pg.identity_regions:
        x, y, w, h = region.rect_mm
        if region.label == "name" or "name" in (region.label or ""):
            c.outline(x, y, w, h, 0.2)
            c.text("NAME", x + 1.5, y + 3.5, 2.0)
    return c.img


def add_barcode(img: np.ndarray, template: Template, page: int, number: str, dpi: float) -> np.ndarray:
    """A copy of a rendered page with a Code128 label for ``number`` in its barcode area."""
    pg = template.page(page)
    if pg.barcode_rect_mm is None:
        return img.copy()
    c = _Canvas(template, dpi)
    c.img = img.copy()
    x, y, w, h = pg.barcode_rect_mm
    c.img[int(c.p(y)) + 2:int(c.p(y + h)) - 2, int(c.p(x)) + 2:int(c.p(x + w)) - 2] = PAPER
    _draw_barcode(c, pg.barcode_rect_mm, number)
    return c.img


def render_pages(template: Template, dpi: float = 200, candidate: str | None = None) -> list[np.ndarray]:
    return [render_card(template, dpi, p.code, candidate) for p in template.pages]


def write_card(template: Template, out: str | Path, dpi: float = 200,
               candidate: str | None = None) -> list[Path]:
    """Write all pages: ``.pdf`` -> one multi-page PDF; ``.png`` -> ``out`` for the first
    page and ``<stem>-p<code>.png`` for the others. Returns the written paths."""
    out = Path(out)
    pages = render_pages(template, dpi, candidate)
    suffix = out.suffix.lower()
    if suffix == ".pdf":
        ims = [Image.fromarray(p) for p in pages]
        ims[0].save(out, "PDF", resolution=float(dpi), save_all=True, append_images=ims[1:])
        return [out]
    if suffix == ".png":
        paths = []
        for p, img in zip(template.pages, pages):
            path = out if p.code == template.pages[0].code else out.with_name(f"{out.stem}-p{p.code}.png")
            Image.fromarray(img).save(path, "PNG", dpi=(dpi, dpi))
            paths.append(path)
        return paths
    raise ValueError(f"unsupported output format {out.suffix!r}: use .pdf or .png")
