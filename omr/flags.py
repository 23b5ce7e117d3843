"""Reason codes attached to readings. Every code means "a person must look"; none is
decided silently (R-OMR-7: nobody modifies what a candidate filled — doubtful cards are
handled by people). docs/omr.md lists them with their meaning."""
from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # ---- input errors: no reading at all ----
    EMPTY_INPUT = "empty_input"                      # zero bytes
    NOT_AN_IMAGE = "not_an_image"                    # unknown or unsupported format
    TRUNCATED_IMAGE = "truncated_image"              # file ends before the image data does
    DECODE_FAILED = "decode_failed"                  # decoder refused the data
    IMAGE_TOO_LARGE = "image_too_large"              # decompression-bomb guard (header check)
    IMAGE_TOO_SMALL = "image_too_small"              # too few pixels to read anything
    WRONG_PAGE_SIZE = "wrong_page_size"              # aspect ratio / size does not match the template
    BLANK_PAGE = "blank_page"                        # no print at all (empty sheet, lid, back side)
    FIDUCIALS_NOT_FOUND = "fiducials_not_found"      # corner marks missing or inconsistent
    ORIENTATION_UNKNOWN = "orientation_unknown"      # coded corner mark not identified
    UNKNOWN_PAGE = "unknown_page"                    # page code not a page of this template
    # ---- card-level doubts ----
    FIDUCIAL_MISSING = "fiducial_missing"            # read from 3 of 4 corner marks
    MISREGISTRATION = "misregistration"              # alignment RMS above the limit / timing marks missing
    PAGE_CODE_UNCLEAR = "page_code_unclear"          # page-code bits or parity unclear
    PAGE_CODE_MISMATCH = "page_code_mismatch"        # read page differs from the page asked for
    CALIBRATION_FAILED = "calibration_failed"        # printed calibration bubbles not as printed
    LOW_CONTRAST = "low_contrast"                    # noise too high to see a 25 % faint mark
    SCANNER_STREAK = "scanner_streak"                # vertical streak on the scan
    CANDIDATE_NUMBER_UNCLEAR = "candidate_number_unclear"    # a digit column blank/multi/uncertain
    CANDIDATE_NUMBER_INVALID = "candidate_number_invalid"    # fails R-OMR-8 structure
    CANDIDATE_NOT_ON_ROLL = "candidate_not_on_roll"          # R-OMR-8: not on the batch roll
    BARCODE_UNREADABLE = "barcode_unreadable"                # no Code128 in the label area
    BARCODE_GRID_MISMATCH = "barcode_grid_mismatch"          # label and bubbles disagree
    SUBJECT_CODE_UNCLEAR = "subject_code_unclear"
    SUBJECT_CODE_MISMATCH = "subject_code_mismatch"          # not the subject of the batch
    ABSENCE_UNCLEAR = "absence_unclear"
    ABSENT_WITH_ANSWERS = "absent_with_answers"              # 缺考 marked but answers present
    # ---- question-level doubts ----
    MULTI_MARK = "multi_mark"                        # more than one option on a single-choice question
    FAINT_MARK = "faint_mark"                        # a mark between blank and filled, no full mark
    ERASURE_RESIDUE = "erasure_residue"              # faint mark next to a full mark (erased answer?)
    LOW_CONFIDENCE = "low_confidence"                # decided, but close to a threshold
    LOCAL_SHIFT = "local_shift"                      # bubble found at the edge of the search window
    STREAK_ON_BUBBLE = "streak_on_bubble"            # a scanner streak crosses the bubble


ERROR_REASONS = frozenset({
    Reason.EMPTY_INPUT, Reason.NOT_AN_IMAGE, Reason.TRUNCATED_IMAGE, Reason.DECODE_FAILED,
    Reason.IMAGE_TOO_LARGE, Reason.IMAGE_TOO_SMALL, Reason.WRONG_PAGE_SIZE, Reason.BLANK_PAGE,
    Reason.FIDUCIALS_NOT_FOUND, Reason.ORIENTATION_UNKNOWN, Reason.UNKNOWN_PAGE,
})
