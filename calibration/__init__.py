"""Marker calibration and statistics (issue 7).

Trial marking and the scheme (:mod:`.scheme`), standardisation sets and
qualification (:mod:`.standardisation`), seeds and self-checks (:mod:`.seeds`),
validity/drift monitoring (:mod:`.monitor`), suspension with blast-radius re-queue
(:mod:`.suspension`), marker statistics (:mod:`.stats`, :mod:`.metrics`), plots
(:mod:`.plots`), policy what-if (:mod:`.whatif`), item analysis and reports
(:mod:`.analysis`), CLI (:mod:`.cli`) and the demo (:mod:`.demo`).

Call :func:`install` once at start-up to hook into the marking engine.
"""
from .hooks import install, uninstall

__all__ = ["install", "uninstall"]
