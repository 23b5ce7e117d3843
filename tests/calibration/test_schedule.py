"""The seed and self-check schedules' arithmetic (no database)."""
from __future__ import annotations

import itertools

from calibration import seeds


def test_a_self_checks_due_point_is_the_sum_of_its_gaps_in_any_order_of_asking(monkeypatch):
    """The kept sums equal the plain cumulative sum, asked in any order, across eviction."""
    monkeypatch.setattr(seeds, "_DUE_SUMS", type(seeds._DUE_SUMS)())
    monkeypatch.setattr(seeds, "_DUE_SUMS_KEPT", 2)

    def plain(user, dealt, rate=100):
        return sum(seeds._gap("salt", user, 9, "self_check", k, rate) for k in range(dealt + 1))

    for user, dealt in itertools.product((1, 2, 3), (5, 0, 17, 3, 40)):
        assert seeds._self_check_due_at("salt", user, 9, dealt, 100) == plain(user, dealt)
    assert len(seeds._DUE_SUMS) == 2   # the least recently used marker was dropped
    assert seeds._self_check_due_at("salt", 1, 9, 6, 50) == plain(1, 6, rate=50)   # a new rate, its own sums
    gaps = [seeds._gap("salt", 1, 9, "self_check", k, 100) for k in range(3)]
    assert all(50 <= gap <= 150 for gap in gaps)   # jittered on [N/2, 3N/2]
