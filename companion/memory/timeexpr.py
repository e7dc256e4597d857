"""Time expressions in a question ("last week", "in May", "two days ago", "the first time",
"before I moved") turned into a window of when things were said and an order preference.

Recall uses them on the stored times of facts and turns: items said inside the window rank
higher (a soft preference: a question's time words can be loose), "the first time" prefers
the earliest of equally relevant items and "now" / "the last time" the newest; "before X" /
"after X" is resolved by recall against the time of the best match for X.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Order = Literal["first", "last"]

MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a couple of": 2,
    "a couple": 2,
    "couple of": 2,
    "a few": 3,
    "few": 3,
    "several": 4,
}
UNIT_DAYS = {"day": 1, "week": 7, "month": 30.4, "year": 365.25}
_MONTH = "|".join(MONTHS + [m[:3] for m in MONTHS if m != "may"] + ["sept"])
_NUM = "|".join(sorted(NUMBERS, key=len, reverse=True)) + r"|\d+"

_AGO = re.compile(rf"\b({_NUM})\s+(day|week|month|year)s?\s+ago\b")
_LAST_UNIT = re.compile(r"\b(last|past|previous|this|current)\s+(week|weekend|month|year)\b")
_PAST_N = re.compile(rf"\b(?:last|past)\s+({_NUM})\s+(day|week|month|year)s?\b")
# "the past month", "in the last week", "past year": up to now ("last month": the calendar one)
_TRAILING = re.compile(r"\b(?:the\s+(?:past|last)|past)\s+(week|month|year)\b")
_WEEKDAY = re.compile(rf"\b(last|this|on)\s+({'|'.join(WEEKDAYS)})\b")
_MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}}))?")
_DAY_MONTH = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH})\b(?:,?\s+(\d{{4}}))?"
)
_IN_MONTH = re.compile(rf"\b(?:in|during|since|early|late|mid)[- ]+({_MONTH})\b(?:\s+(\d{{4}}))?")
_IN_YEAR = re.compile(r"\b(?:in|during|since)\s+((?:19|20)\d\d)\b")
_DAYS = {
    "yesterday": 1,
    "last night": 1,
    "today": 0,
    "this morning": 0,
    "tonight": 0,
    "this afternoon": 0,
    "this evening": 0,
    "the day before yesterday": 2,
}
_RECENT = re.compile(r"\b(recently|lately|the other day|these days)\b")
_FIRST = re.compile(
    r"\b(the first time|first time|at first|initially|originally|earliest|"
    r"first (?:did|went|met|started|tried|got|bought|visited|saw|heard))\b"
)
_LAST = re.compile(
    r"\b(the last time|last time|most recent(?:ly)?|latest|currently|"
    r"right now|nowadays|these days|still|anymore|any more|now)\b"
)
_RELATIVE = re.compile(r"\b(before|after|since)\s+(?:i|we|my|our|the)\b([^?.!,;]{3,60})")


@dataclass(frozen=True)
class TimeHint:
    """What a question says about time: a window, an order preference, an anchor event."""

    start: datetime | None = None
    end: datetime | None = None
    order: Order | None = None
    relative: Literal["before", "after"] | None = None  # before/after the anchor event
    anchor: str | None = None  # "I moved" in "before I moved"
    phrase: str | None = None  # the words that set the window

    def inside(self, when: datetime) -> bool | None:
        """Whether `when` is in the window (None when there is no window)."""
        if self.start is None and self.end is None:
            return None
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)

    def to_dict(self) -> dict[str, str | None]:
        """The parts that are set, for recall's reasons."""
        out = {
            "phrase": self.phrase,
            "order": self.order,
            "relative": self.relative,
            "anchor": self.anchor,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }
        return {k: v for k, v in out.items() if v is not None}


def _day(now: datetime) -> datetime:
    """Midnight of `now`'s day (same timezone)."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _number(text: str) -> int:
    """A count written as digits or words."""
    return int(text) if text.isdigit() else NUMBERS[text]


def _month(name: str) -> int:
    """1-12 from a month name or abbreviation."""
    name = name.lower()[:3]
    return next(i for i, m in enumerate(MONTHS, start=1) if m.startswith(name))


def _month_window(month: int, year: int | None, now: datetime) -> tuple[datetime, datetime]:
    """The named month: of `year`, else the most recent one not after now."""
    if year is None:
        year = now.year if month <= now.month else now.year - 1
    start = _day(now).replace(year=year, month=month, day=1)
    end = start.replace(year=year + 1, month=1) if month == 12 else start.replace(month=month + 1)
    return start, end


def _date_window(
    month: int, day: int, year: int | None, now: datetime
) -> tuple[datetime, datetime] | None:
    """One named day (with a day's slack either side: times of day are loose)."""
    try:
        start = _day(now).replace(month=month, day=day, year=year or now.year)
    except ValueError:
        return None
    if year is None and start > now:
        start = start.replace(year=start.year - 1)
    return start - timedelta(days=1), start + timedelta(days=2)


def _unit_window(word: str, unit: str, now: datetime) -> tuple[datetime, datetime]:
    """last/this week, weekend, month, year."""
    today = _day(now)
    this = word in ("this", "current")
    if unit in ("week", "weekend"):
        monday = today - timedelta(days=today.weekday())
        start = monday if this else monday - timedelta(days=7)
        if unit == "weekend":
            start += timedelta(days=5)
            return start, start + timedelta(days=2)
        return start, start + timedelta(days=7)
    if unit == "month":
        first = today.replace(day=1)
        start = first if this else (first - timedelta(days=1)).replace(day=1)
        return _month_window(start.month, start.year, now)
    start = today.replace(month=1, day=1, year=today.year if this else today.year - 1)
    return start, start.replace(year=start.year + 1)


def _window(q: str, now: datetime) -> tuple[datetime | None, datetime | None, str] | None:
    """The first time window the question names, with its phrase."""
    for phrase, days in sorted(_DAYS.items(), key=lambda kv: -len(kv[0])):
        if re.search(rf"\b{phrase}\b", q):
            start = _day(now) - timedelta(days=days)
            return start, start + timedelta(days=1), phrase
    if m := _AGO.search(q):
        span = _number(m[1]) * UNIT_DAYS[m[2]]
        slack = max(1.0, 0.5 * UNIT_DAYS[m[2]])
        return (now - timedelta(days=span + slack), now - timedelta(days=span - slack), m[0])
    if m := _PAST_N.search(q):
        return now - timedelta(days=_number(m[1]) * UNIT_DAYS[m[2]]), now, m[0]
    if m := _TRAILING.search(q):
        return now - timedelta(days=UNIT_DAYS[m[1]]), now, m[0]
    if m := _LAST_UNIT.search(q):
        return (*_unit_window(m[1], m[2], now), m[0])
    if m := _WEEKDAY.search(q):
        back = (_day(now).weekday() - WEEKDAYS.index(m[2])) % 7 or (7 if m[1] == "last" else 0)
        start = _day(now) - timedelta(days=back)
        return start, start + timedelta(days=1), m[0]
    for rx, order in ((_MONTH_DAY, (1, 2, 3)), (_DAY_MONTH, (2, 1, 3))):
        if (m := rx.search(q)) and (
            w := _date_window(
                _month(m[order[0]]), int(m[order[1]]), int(m[3]) if m[3] else None, now
            )
        ):
            return (*w, m[0])
    if m := _IN_MONTH.search(q):
        return (*_month_window(_month(m[1]), int(m[2]) if m[2] else None, now), m[0])
    if m := _IN_YEAR.search(q):
        start = _day(now).replace(year=int(m[1]), month=1, day=1)
        return start, start.replace(year=start.year + 1), m[0]
    if m := _RECENT.search(q):
        return now - timedelta(days=30), None, m[0]
    return None


def parse(question: str, now: datetime) -> TimeHint | None:
    """The time hint of a question asked at `now`, or None when it names no time."""
    q = question.lower().replace("\u2019", "'")
    window = _window(q, now)
    order: Order | None = None
    if _FIRST.search(q):
        order = "first"
    elif _LAST.search(q):
        order = "last"
    relative = _RELATIVE.search(q)
    if window is None and order is None and relative is None:
        return None
    start, end, phrase = window if window else (None, None, None)
    if end is not None and end > now and start is not None and start <= now:
        end = None  # nothing is said after now: an open window reads the same
    return TimeHint(
        start=start,
        end=end,
        order=order,
        relative=relative[1].replace("since", "after") if relative else None,
        anchor=relative[2].strip() if relative else None,
        phrase=phrase,
    )
