"""The look before a read (services/probe.py): the date ranges it searches, and what it says about a chain."""

from __future__ import annotations

import datetime as dt

from intake_clms.services.base import Hit
from intake_clms.services.probe import Answer, windows

D = dt.date


def test_windows_go_back_from_the_end_eight_times_longer_each_and_stop_at_the_first_day() -> None:
    # 10 days, then 80, then 640, each ending the day before the last began
    assert windows(D(2026, 6, 30), 10) == [(D(2026, 6, 21), D(2026, 6, 30)), (D(2026, 4, 2), D(2026, 6, 20)),
                                           (D(2024, 7, 1), D(2026, 4, 1))]
    assert windows(D(2026, 6, 30), 10, first=D(2026, 5, 1)) == [(D(2026, 6, 21), D(2026, 6, 30)),
                                                               (D(2026, 5, 1), D(2026, 6, 20))]
    assert windows(D(2020, 1, 1), 10, first=D(2021, 1, 1)) == []  # coverage starts later: nothing to ask


def test_an_answer_says_a_fall_through_to_an_ordering_service_and_only_that() -> None:
    order = Hit(key="k", name="cut", ordered=True, start="2026-09-01", end="2026-09-30")
    window = Hit(key="w", name="cog", access="window", ordered=False, start="2026-06-21", end="2026-06-30")
    older = Hit(key="o", name="cog", access="window", ordered=False, start="2026-06-11", end="2026-06-20")
    fell = Answer("clms", [order], passed=["cdse", "wekeo"])
    assert fell.falls_through and fell.orders and fell.newest() is None  # an order says nothing of what exists
    assert fell.notice().startswith("CDSE and WEkEO found no product") and "the CLMS download API" in fell.notice()
    first = Answer("cdse", [older, window])
    assert not first.falls_through and not first.orders and first.notice() == ""
    assert first.newest() is window
    assert Answer("wekeo", [order], passed=["cdse"]).notice()  # WEkEO's queue is an order too
    assert Answer("wekeo", [], passed=["cdse"]).notice()  # too many to list: WEkEO still orders them
    assert Answer("cdse", [], passed=["wekeo"]).notice() == ""
    assert Answer("cdse", [window], passed=["wekeo"]).notice() == ""  # falling to a direct read needs no warning
    assert Answer(None, passed=["cdse", "wekeo"]).notice() == ""  # nobody has it: the read's own error says so
