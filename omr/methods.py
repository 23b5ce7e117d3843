"""The two diverse fill measures, each turned into per-card calibrated values
(R-OMR-3: the double read uses different registration *and* different measures).

* method A — mean darkness of the inner square relative to local paper; baseline = the
  card's median bubble (most are blank), scale = the printed filled calibration bubble.
* method B — shares of inner-disk pixels darker than a per-card mark cut (60 % of this
  candidate's typical mark darkness) and a faint cut (9 % of the printed solid).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import decide as dec
from .layout import PageLayout
from .measure import Patches, dark_share, disk_darkness, disks, fill_a
from .registration import Fiducials
from .settings import Settings
from .workimage import WorkImage


@dataclass
class Measured:
    primary: np.ndarray             # "is it a mark?" per bubble
    faint: np.ndarray               # "is there any ink?" per bubble
    calibration: dec.Calibration
    raw: dict[str, np.ndarray]      # kept in the reading for rescoring without images
    low_contrast: bool
    cuts: dict[str, float] = field(default_factory=dict)


def _ink_darkness(fid: Fiducials) -> float:
    """Darkness of the printed solid fiducials: fallback scale if calibration is damaged."""
    return max(0.2, 1.0 - fid.ink_level / max(fid.paper_level, 1.0))


def measure_a(work: WorkImage, patches: Patches, centres: np.ndarray, radius: float,
              layout: PageLayout, fid: Fiducials, settings: Settings) -> Measured:
    cf, cb = layout.calibration_filled, layout.calibration_blank
    raw = fill_a(work, patches, centres, radius)
    mask = np.ones(raw.size, bool)
    mask[[cf, cb]] = False
    # blank baseline: the card's own bubbles (mostly blank); pages without candidate
    # bubbles fall back to the printed blank calibration bubble
    base_level = dec.median(raw[mask]) if mask.any() else float(raw[cb])
    scale = raw[cf] - base_level
    if not scale > 0.3:
        scale = _ink_darkness(fid)   # calibration bubble unusable (flagged by calibrate)
    values = (raw - base_level) / scale
    cal = dec.calibrate(values, values, cf, cb, settings, noise_floor=0.004, scale_floor=1.0)
    return Measured(values, values, cal, {"darkness": raw}, cal.low_contrast)


def measure_b(work: WorkImage, patches: Patches, centres: np.ndarray, radius: float,
              layout: PageLayout, fid: Fiducials, settings: Settings) -> Measured:
    cf, cb = layout.calibration_filled, layout.calibration_blank
    disk = disks(work, centres, radius * 0.68, patches)
    darkness = disk_darkness(disk)
    solid = float(darkness[cf])
    if not solid > 0.3:
        solid = _ink_darkness(fid)
    faint_cut = 1.0 - 0.09 * solid
    faint = dark_share(disk, faint_cut)
    # Per-card mark cut: 60 % of the darkness of this candidate's clear marks, so that
    # erasure residue (<= 40 % of a full mark) stays below it.
    mask = np.ones(darkness.size, bool)
    mask[[cf, cb]] = False
    clear = mask & (faint > 0.6)
    mark_dark = dec.median(darkness[clear]) if clear.sum() >= 3 else 0.7 * solid
    mark_dark = min(max(mark_dark, 0.25 * solid), solid)
    mark_cut = 1.0 - 0.6 * mark_dark
    primary = dark_share(disk, mark_cut)
    cal = dec.calibrate(primary, faint, cf, cb, settings, noise_floor=0.01, scale_floor=1.0)
    # B sees nothing fainter than its faint cut: a quarter of this card's marks must
    # clear it, or the card cannot show faint marks at all (R-OMR-7: flag, not guess).
    low = cal.low_contrast or 0.25 * mark_dark < 1.0 - faint_cut
    return Measured(primary, faint, cal, {"dark_share": primary, "faint_share": faint}, low,
                    {"mark_cut": mark_cut, "faint_cut": faint_cut})
