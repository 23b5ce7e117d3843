"""Optical mark recognition (OMR) engine for answer cards (答题卡).

Pure library: card templates (``omr.template``), printable cards (``omr.render``),
recognition with two diverse methods (``omr.reading.read_card``), subjective answer
region cutting (``omr.regions``), synthetic scans with ground truth (``omr.synthetic``)
and CLI sub-commands (``omr.cli.register``). See docs/omr.md.
"""
