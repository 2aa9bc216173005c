"""Business hours: is the line open now, and when does it open next (weekly schedule, public
holidays from the `holidays` package, closed dates and special hours, in the hotline's zone)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from ivr.menus.model import WEEKDAYS, BusinessHours, Language, TimeRange

# Search horizon for the next opening: past a year, something is wrong with the schedule.
_HORIZON_DAYS = 400
# A line open this long without a break is open around the clock (no closing to speak of).
_AROUND_THE_CLOCK = timedelta(days=8)


class Hours:
    def __init__(self, config: BusinessHours):
        self.config = config
        self.zone = ZoneInfo(config.timezone)

    def ranges_on(self, day: date) -> list[TimeRange]:
        """Opening ranges for a local date; special hours win over closures and the week."""
        if day in self.config.special_hours:
            return self.config.special_hours[day]
        if day in self.config.closed_dates or self._is_public_holiday(day):
            return []
        return self.config.weekly.get(WEEKDAYS[day.weekday()], [])

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        t = local.time().replace(tzinfo=None)
        return any(r.opens <= t < r.closes for r in self.ranges_on(local.date()))

    def next_opening(self, now: datetime) -> datetime | None:
        """The next moment the line opens after `now` (local time), or None within a year."""
        local = now.astimezone(self.zone)
        for offset in range(_HORIZON_DAYS):
            day = local.date() + timedelta(days=offset)
            for r in self.ranges_on(day):
                start = datetime.combine(day, r.opens, tzinfo=self.zone)
                if start > local:
                    return start
        return None

    def closing(self, now: datetime) -> datetime | None:
        """When the line, open now, next closes: the end of the range it is in, or of the ranges
        that follow on from it without a gap ("…-24:00" then "00:00-…" the next day, or
        "09:00-12:00" then "12:00-18:00"). None when it is closed now — or never closes."""
        local = now.astimezone(self.zone)
        t = local.time().replace(tzinfo=None)
        current = next((r for r in self.ranges_on(local.date()) if r.opens <= t < r.closes), None)
        if current is None:
            return None
        day, end = local.date(), current.closes
        while day - local.date() <= _AROUND_THE_CLOCK:
            if end == time.max:  # "24:00": the next day at midnight
                day, end = day + timedelta(days=1), time(0)
            following = next((r for r in self.ranges_on(day) if r.opens == end and r.closes > end), None)
            if following is None:
                return datetime.combine(day, end, tzinfo=self.zone)
            end = following.closes
        return None  # open around the clock: no closing a wait could run past

    def in_window(self, windows: list, now: datetime) -> bool:
        """Whether `now` falls in one of the (days, hours) windows, in the hotline's zone."""
        local = now.astimezone(self.zone)
        t = local.time().replace(tzinfo=None)
        day = WEEKDAYS[local.weekday()]
        return any(day in w.days and w.hours.opens <= t < w.hours.closes for w in windows)

    def _is_public_holiday(self, day: date) -> bool:
        calendar = self.config.public_holidays
        if calendar is None:
            return False
        return day in _holiday_dates(calendar.country, calendar.subdivision, day.year)


@lru_cache(maxsize=64)
def _holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


def describe_opening(opening: datetime, now: datetime, language: Language) -> str:
    """'tomorrow, Tuesday, at 9:00' or 'on Monday, November 30, at 9:00' in the caller's language,
    in the hotline's zone."""
    local_now = now.astimezone(opening.tzinfo)
    days_ahead = (opening.date() - local_now.date()).days
    clock = say_time(opening, language)
    if days_ahead in (0, 1):
        day = language.today if days_ahead == 0 else language.tomorrow
        weekday = language.weekdays[opening.weekday()]
        return language.opening_soon_format.format(day=day, weekday=weekday, time=clock)
    month_name = language.months[opening.month - 1] if language.months else ""
    when = language.date_format.format(month=opening.month, day=opening.day, month_name=month_name)
    return language.opening_format.format(day=language.weekdays[opening.weekday()], date=when, time=clock)


def say_time(moment: datetime, language: Language) -> str:
    """A time of day as the language says it: '9 AM', '8:30 PM', '9時', '20点30分'."""
    template = (language.time_format_on_the_hour if moment.minute == 0 else None) or language.time_format
    return template.format(
        hour=moment.hour,
        hour12=moment.hour % 12 or 12,
        minute=moment.minute,
        minute02=f"{moment.minute:02d}",
        ampm=language.am_pm[moment.hour >= 12],
    )
