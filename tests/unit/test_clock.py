"""The logical clock follows the most frequent skew and ignores outliers."""

from __future__ import annotations

from fustor.clock import LogicalClock


def test_no_samples_is_fusion_time() -> None:
    c = LogicalClock(wall=lambda: 1000.0)
    assert c.now() == 1000.0
    assert c.skew == 0.0


def test_mode_of_skews_wins_over_far_future_mtimes() -> None:
    c = LogicalClock(wall=lambda: 1000.0)
    for _ in range(10):
        c.observe(mtime=995.0, fusion_time=1000.0)   # storage 5 s behind
    for _ in range(3):
        c.observe(mtime=9_999_999.0, fusion_time=1000.0)  # touch -d into the future
    assert c.skew == 5.0
    assert c.now(2000.0) == 1995.0


def test_window_slides() -> None:
    c = LogicalClock(window=4, wall=lambda: 0.0)
    for _ in range(4):
        c.observe(mtime=90.0, fusion_time=100.0)
    for _ in range(4):
        c.observe(mtime=98.0, fusion_time=100.0)
    assert c.skew == 2.0
    assert c.samples == 4
