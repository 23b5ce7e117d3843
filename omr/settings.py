"""Recognition settings: a frozen, hashable value (R-OMR-1: a batch records the settings
hash next to every reading and keeps the settings frozen for its duration)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

RECOGNITION_VERSIONS = {"a": "omr-a/1.0", "b": "omr-b/1.0"}


@dataclass(frozen=True)
class Settings:
    # --- input guards (checked on the header, before decoding) ---
    max_pixels: int = 40_000_000        # decompression-bomb limit (A4 at 600 dpi is 35 Mpx)
    max_bytes: int = 80_000_000
    min_side_px: int = 600              # below ~75 dpi for A4 nothing can be read reliably
    # --- registration ---
    work_dpi: float = 50.0              # fiducials are found on a box-downscaled copy at ~this dpi
    local_search_mm: float = 1.0        # per-bubble search radius around the mapped centre
    max_rms_mm: float = 0.35            # alignment quality limit (reprojection RMS of marks)
    min_timing_fraction: float = 0.75   # share of timing marks that must be found
    # --- decision (values in units of the card's own calibration) ---
    blank_floor: float = 0.08           # lowest "not blank" level above the blank baseline
    noise_k: float = 6.0                # ... and at least this many robust sigmas
    filled_fraction: float = 0.6        # "filled" at this share of the card's mark level (erasure residue <= 0.4)
    default_mark_level: float = 0.8     # mark level when the card has too few marks to tell
    min_confidence: float = 2.0         # decided bubbles closer than this (in sigmas) are flagged
    max_faint_to_mark: float = 0.25     # faint marks of this share of a full mark must be seen
    # --- artefacts ---
    streak_contrast: float = 0.08       # dark vertical streak: darker than paper by this share
    streak_coverage: float = 0.85       # ... over at least this share of the page height
    blank_page_ink: float = 0.002       # share of dark pixels below which a page is blank

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of the settings (recorded with every reading)."""
        return _settings_hash(self)


@lru_cache(maxsize=32)
def _settings_hash(settings: Settings) -> str:
    blob = json.dumps(settings.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


DEFAULT_SETTINGS = Settings()
