//! Local work times ("remind at 09:00, debit at 06:00 in the customer's time zone") turned
//! into UTC instants, with daylight-saving gaps and overlaps handled on purpose.
//!
//! The rules, chosen so that work never runs twice and never runs an hour late:
//! - a local time that happens twice (autumn overlap) means its FIRST occurrence;
//! - a local time that never happens (spring gap) means the instant the clocks jumped to
//!   plus the time's offset into the gap: 02:30 on a New York spring-forward day is
//!   03:30 EDT. That is the same instant as reading 02:30 with the offset in force before
//!   the jump, and keeps the order of work times inside the gap (02:15 before 02:45).

use chrono::offset::LocalResult;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkTimeError {
    #[error("{input:?} is not a local time: {reason} (expected HH:MM, 24-hour, e.g. 09:00)")]
    BadLocalTime { input: String, reason: &'static str },
}

/// The UTC instant of `time` on `date` in `tz` (see the module docs for gaps and overlaps).
pub fn local_instant(date: NaiveDate, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let local = date.and_time(time);
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _second) => first.with_timezone(&Utc),
        LocalResult::None => {
            let offset = offset_before_gap(local, tz);
            local.and_utc() - offset
        }
    }
}

/// The UTC offset in force just before the gap that swallows `local`: found from the last
/// existing local time before it. Gaps are at most a day long (Samoa skipped 2011-12-30),
/// so stepping back 15 minutes at a time for two days always finds one.
fn offset_before_gap(local: NaiveDateTime, tz: Tz) -> Duration {
    let step = Duration::minutes(15);
    let mut probe = local;
    for _ in 0..(2 * 24 * 4) {
        probe -= step;
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(at) => return offset_of(&at),
            // Right after an overlap the later reading is the one in force before our gap.
            LocalResult::Ambiguous(_, later) => return offset_of(&later),
            LocalResult::None => {}
        }
    }
    // Unreachable with the tz database; reading the time as UTC is a defined fallback.
    Duration::zero()
}

fn offset_of(at: &DateTime<Tz>) -> Duration {
    Duration::seconds(i64::from(at.offset().fix().local_minus_utc()))
}

/// The calendar date `at` falls on in `tz`.
pub fn local_date(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// Parses a configured local time in 24-hour `HH:MM` form (`9:00` is accepted too).
pub fn parse_local_time(s: &str) -> Result<NaiveTime, WorkTimeError> {
    let bad = |reason| WorkTimeError::BadLocalTime {
        input: s.to_string(),
        reason,
    };
    let (hours, minutes) = s.trim().split_once(':').ok_or_else(|| bad("no ':'"))?;
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(hours) || hours.len() > 2 {
        return Err(bad("the hour must be one or two digits"));
    }
    if !all_digits(minutes) || minutes.len() != 2 {
        return Err(bad(
            "the minutes must be two digits (seconds are not allowed)",
        ));
    }
    let h: u32 = hours.parse().map_err(|_| bad("the hour is not a number"))?;
    let m: u32 = minutes
        .parse()
        .map_err(|_| bad("the minutes are not a number"))?;
    if h > 23 {
        return Err(bad("the hour must be 00 to 23"));
    }
    if m > 59 {
        return Err(bad("the minutes must be 00 to 59"));
    }
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(|| bad("out of range"))
}

/// Local hours in which no customer email goes out. `start` is quiet, `end` is allowed
/// again; the window may wrap midnight (21:00-08:00). `start == end` means no quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// Parses both ends in `HH:MM` form.
    pub fn parse(start: &str, end: &str) -> Result<Self, WorkTimeError> {
        Ok(QuietHours {
            start: parse_local_time(start)?,
            end: parse_local_time(end)?,
        })
    }

    /// Whether a local wall-clock time is inside the quiet window.
    pub fn is_quiet(&self, time: NaiveTime) -> bool {
        if self.start == self.end {
            false
        } else if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// `at` if it is outside quiet hours in `tz`, else the instant the quiet period ends.
    pub fn next_allowed(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = at.with_timezone(&tz).naive_local();
        let (date, time) = (local.date(), local.time());
        if !self.is_quiet(time) {
            return at;
        }
        // In a wrapping window, evening times end tomorrow, early-morning times today.
        let end_date = if self.start > self.end && time >= self.start {
            match date.succ_opt() {
                Some(next) => next,
                None => return at,
            }
        } else {
            date
        };
        // In an autumn overlap the end's first occurrence may already be behind us (we are
        // in the repeated hour): then the quiet period is over and `at` is allowed.
        local_instant(end_date, self.end, tz).max(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;
    use chrono_tz::America::New_York;
    use chrono_tz::Asia::Shanghai;
    use chrono_tz::Europe::London;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("valid test time")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid test instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn new_york_spring_forward_gap_moves_forward_by_the_gap() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 -> 03:30 EDT = 07:30Z.
        assert_eq!(
            local_instant(d(2026, 3, 8), t(2, 30), New_York),
            utc("2026-03-08T07:30:00Z")
        );
        // Either side of the gap is ordinary.
        assert_eq!(
            local_instant(d(2026, 3, 8), t(1, 59), New_York),
            utc("2026-03-08T06:59:00Z")
        );
        assert_eq!(
            local_instant(d(2026, 3, 8), t(3, 0), New_York),
            utc("2026-03-08T07:00:00Z")
        );
        // 02:00 itself does not exist: it is the jump instant, 03:00 EDT.
        assert_eq!(
            local_instant(d(2026, 3, 8), t(2, 0), New_York),
            utc("2026-03-08T07:00:00Z")
        );
        // 09:00 that day is EDT (-4).
        assert_eq!(
            local_instant(d(2026, 3, 8), t(9, 0), New_York),
            utc("2026-03-08T13:00:00Z")
        );
    }

    #[test]
    fn new_york_fall_back_overlap_takes_the_first_occurrence() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens at 05:30Z and 06:30Z.
        assert_eq!(
            local_instant(d(2026, 11, 1), t(1, 30), New_York),
            utc("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            local_instant(d(2026, 11, 1), t(6, 0), New_York),
            utc("2026-11-01T11:00:00Z")
        );
    }

    #[test]
    fn london_transitions() {
        // 2026-03-29: 01:00 GMT jumps to 02:00 BST. 01:30 -> 02:30 BST = 01:30Z.
        assert_eq!(
            local_instant(d(2026, 3, 29), t(1, 30), London),
            utc("2026-03-29T01:30:00Z")
        );
        assert_eq!(
            local_instant(d(2026, 3, 29), t(9, 0), London),
            utc("2026-03-29T08:00:00Z")
        );
        // 2026-10-25: 02:00 BST falls back to 01:00 GMT; 01:30 first = 00:30Z.
        assert_eq!(
            local_instant(d(2026, 10, 25), t(1, 30), London),
            utc("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            local_instant(d(2026, 10, 25), t(9, 0), London),
            utc("2026-10-25T09:00:00Z")
        );
    }

    #[test]
    fn shanghai_has_no_dst() {
        // UTC+8 all year: 06:00 local is 22:00Z the day before.
        assert_eq!(
            local_instant(d(2026, 3, 8), t(6, 0), Shanghai),
            utc("2026-03-07T22:00:00Z")
        );
        assert_eq!(
            local_instant(d(2026, 11, 1), t(6, 0), Shanghai),
            utc("2026-10-31T22:00:00Z")
        );
        assert_eq!(
            local_date(utc("2026-03-07T22:00:00Z"), Shanghai),
            d(2026, 3, 8)
        );
        assert_eq!(
            local_date(utc("2026-03-07T15:59:59Z"), Shanghai),
            d(2026, 3, 7)
        );
    }

    #[test]
    fn parses_hh_mm_with_clear_errors() {
        assert_eq!(parse_local_time("09:00"), Ok(t(9, 0)));
        assert_eq!(parse_local_time("9:05"), Ok(t(9, 5)));
        assert_eq!(parse_local_time(" 23:59 "), Ok(t(23, 59)));
        assert_eq!(parse_local_time("00:00"), Ok(t(0, 0)));
        for bad in [
            "24:00", "12:60", "0900", "9", "", "09:00:00", "-1:00", "ab:cd", "9:5",
        ] {
            let err = parse_local_time(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains("HH:MM"), "{msg}");
        }
        let msg = parse_local_time("24:00").expect_err("24").to_string();
        assert!(
            msg.contains("\"24:00\"") && msg.contains("00 to 23"),
            "{msg}"
        );
    }

    #[test]
    fn quiet_hours_wrapping_midnight() {
        let quiet = QuietHours::parse("21:00", "08:00").expect("valid");
        // 2026-06-10 in Shanghai (UTC+8).
        // 22:30 local (14:30Z) is quiet: allowed at 08:00 next day = 00:00Z on the 11th.
        assert_eq!(
            quiet.next_allowed(utc("2026-06-10T14:30:00Z"), Shanghai),
            utc("2026-06-11T00:00:00Z")
        );
        // 03:00 local (19:00Z the day before) is quiet: allowed at 08:00 the same local day.
        assert_eq!(
            quiet.next_allowed(utc("2026-06-09T19:00:00Z"), Shanghai),
            utc("2026-06-10T00:00:00Z")
        );
        // 21:00 sharp is quiet, 08:00 sharp is allowed, midday is allowed.
        assert_eq!(
            quiet.next_allowed(utc("2026-06-10T13:00:00Z"), Shanghai),
            utc("2026-06-11T00:00:00Z")
        );
        for allowed in [
            "2026-06-10T00:00:00Z",
            "2026-06-10T04:00:00Z",
            "2026-06-10T12:59:00Z",
        ] {
            assert_eq!(quiet.next_allowed(utc(allowed), Shanghai), utc(allowed));
        }
    }

    #[test]
    fn quiet_hours_within_a_day_and_none() {
        let lunch = QuietHours::parse("12:00", "13:30").expect("valid");
        // 12:15 London BST (11:15Z) -> 13:30 BST = 12:30Z.
        assert_eq!(
            lunch.next_allowed(utc("2026-07-01T11:15:00Z"), London),
            utc("2026-07-01T12:30:00Z")
        );
        assert_eq!(
            lunch.next_allowed(utc("2026-07-01T10:15:00Z"), London),
            utc("2026-07-01T10:15:00Z")
        );
        let none = QuietHours::parse("08:00", "08:00").expect("valid");
        assert_eq!(
            none.next_allowed(utc("2026-07-01T07:00:00Z"), London),
            utc("2026-07-01T07:00:00Z")
        );
    }

    #[test]
    fn quiet_hours_end_across_dst_changes() {
        let quiet = QuietHours::parse("21:00", "08:00").expect("valid");
        // New York, night before spring forward: 23:00 EST Mar 7 (04:00Z Mar 8) -> 08:00 EDT
        // Mar 8 = 12:00Z.
        assert_eq!(
            quiet.next_allowed(utc("2026-03-08T04:00:00Z"), New_York),
            utc("2026-03-08T12:00:00Z")
        );
        // Night before fall back: 23:00 EDT Oct 31 (03:00Z Nov 1) -> 08:00 EST = 13:00Z.
        assert_eq!(
            quiet.next_allowed(utc("2026-11-01T03:00:00Z"), New_York),
            utc("2026-11-01T13:00:00Z")
        );
        // A window ending inside the repeated hour: 01:15 EST (second pass, 06:15Z) is
        // after the first 01:30 EDT (05:30Z), so the quiet period is already over.
        let short = QuietHours::parse("21:00", "01:30").expect("valid");
        assert_eq!(
            short.next_allowed(utc("2026-11-01T06:15:00Z"), New_York),
            utc("2026-11-01T06:15:00Z")
        );
        // First pass 01:15 EDT (05:15Z) waits until the first 01:30 (05:30Z).
        assert_eq!(
            short.next_allowed(utc("2026-11-01T05:15:00Z"), New_York),
            utc("2026-11-01T05:30:00Z")
        );
    }

    const ZONES: [Tz; 8] = [
        New_York,
        London,
        Shanghai,
        chrono_tz::Australia::Lord_Howe, // 30-minute DST shift
        chrono_tz::Australia::Sydney,    // southern hemisphere
        chrono_tz::America::Santiago,    // DST change at midnight
        chrono_tz::Asia::Kolkata,        // half-hour offset, no DST
        chrono_tz::Pacific::Apia,        // skipped a whole day in 2011
    ];

    /// Every quarter hour of 2026 in every zone above: that covers each zone's real 2026
    /// transitions, which random sampling would rarely hit.
    #[test]
    fn every_quarter_hour_of_2026_maps_back_or_jumps_by_the_gap() {
        let mut gaps = 0;
        for tz in ZONES {
            let mut date = d(2026, 1, 1);
            while date.year() == 2026 {
                for quarter in 0..96 {
                    let time = t(quarter / 4, (quarter % 4) * 15);
                    let asked = date.and_time(time);
                    let local = local_instant(date, time, tz)
                        .with_timezone(&tz)
                        .naive_local();
                    if matches!(tz.from_local_datetime(&asked), LocalResult::None) {
                        // Moved forward by the gap: an hour, or 30 minutes on Lord Howe.
                        gaps += 1;
                        let jump = local - asked;
                        assert!(
                            jump > Duration::zero() && jump <= Duration::hours(1),
                            "{tz} {asked}: {local}"
                        );
                    } else {
                        assert_eq!(local, asked, "{tz}");
                    }
                }
                date = date.succ_opt().expect("in range");
            }
        }
        // New York, London, Lord Howe (2 quarters), Sydney, Santiago: 4 + 4 + 2 + 4 + 4.
        assert_eq!(gaps, 18);
    }

    proptest! {
        #[test]
        fn local_instant_lands_on_the_requested_local_date(
            days in 0i64..(60 * 366),
            minutes in 0u32..(24 * 60),
            zone in 0usize..ZONES.len(),
        ) {
            let tz = ZONES[zone];
            let date = d(1990, 1, 1) + Duration::days(days);
            let time = t(minutes / 60, minutes % 60);
            let at = local_instant(date, time, tz);
            match tz.from_local_datetime(&date.and_time(time)) {
                LocalResult::None => {
                    // In a gap: strictly after the last minute before it, and the jump is
                    // never backwards.
                    prop_assert!(at.with_timezone(&tz).naive_local() > date.and_time(time));
                }
                _ => {
                    prop_assert_eq!(local_date(at, tz), date);
                    prop_assert_eq!(at.with_timezone(&tz).time(), time);
                }
            }
        }

        #[test]
        fn next_allowed_is_never_earlier_and_never_quiet(
            secs in 0i64..(20 * 366 * 86_400),
            start in 0u32..(24 * 60),
            end in 0u32..(24 * 60),
            zone in 0usize..ZONES.len(),
        ) {
            let tz = ZONES[zone];
            let quiet = QuietHours { start: t(start / 60, start % 60), end: t(end / 60, end % 60) };
            let at = utc("2015-01-01T00:00:00Z") + Duration::seconds(secs);
            let next = quiet.next_allowed(at, tz);
            prop_assert!(next >= at);
            // At most a day later, even across a DST change.
            prop_assert!(next - at <= Duration::hours(25));
            if !quiet.is_quiet(at.with_timezone(&tz).time()) {
                prop_assert_eq!(next, at);
            } else if next != at {
                // A delayed send lands exactly on the quiet period's end, or, where that
                // end falls in a DST gap, just past it.
                let local = next.with_timezone(&tz).naive_local();
                let end_in_gap = matches!(
                    tz.from_local_datetime(&local.date().and_time(quiet.end)),
                    LocalResult::None
                );
                prop_assert!(local.time() == quiet.end || end_in_gap, "{} -> {}", at, next);
            }
        }
    }
}
