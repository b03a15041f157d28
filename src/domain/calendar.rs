//! Holiday calendars and business-day adjustment of due dates.
//!
//! A business day is a Monday-to-Friday that is not a public holiday, or an extra working
//! day: China moves working days onto weekends around long holidays (调休), and those
//! Saturdays and Sundays are full banking days.

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How a due date that falls on a non-business day moves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum BusinessDayRule {
    #[default]
    None,
    Following,
    Preceding,
    ModifiedFollowing,
}

/// Days off (public holidays) and extra working days (weekend make-up days, as in China).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolidayCalendar {
    pub name: String,
    pub holidays: BTreeSet<NaiveDate>,
    pub extra_working_days: BTreeSet<NaiveDate>,
    /// The calendar years it speaks for (its `years` key, or else every year it lists a
    /// date in). A date in another year gets weekends-only treatment, and the planner and
    /// `check-config` warn about it (see [`HolidayCalendar::covers`]).
    pub years: BTreeSet<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("calendar is not valid TOML: {0}")]
    Syntax(String),
    #[error("{date} is listed both as a holiday and as a working day")]
    Conflict { date: NaiveDate },
    #[error("{field} entry {value:?} is not a date in YYYY-MM-DD form")]
    BadDate { field: &'static str, value: String },
    /// A weekday listed as a working day is already one; listing it is almost always a typo
    /// for the weekend date that was meant.
    #[error("working_days entry {date} is a {weekday}, not a Saturday or Sunday")]
    NotAWeekend { date: NaiveDate, weekday: Weekday },
    // The messages below embed their cause instead of exposing it as `source()`, so an
    // anyhow `{:#}` chain prints it once, not twice.
    #[error("cannot read calendar file {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("calendar file {}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<CalendarError>,
    },
}

/// The on-disk shape. Dates are strings so a malformed one can be named in the error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    name: String,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    working_days: Vec<String>,
    /// Years covered; default: the years of the listed dates.
    #[serde(default)]
    years: Vec<i32>,
}

fn parse_dates(
    field: &'static str,
    values: &[String],
) -> Result<BTreeSet<NaiveDate>, CalendarError> {
    values
        .iter()
        .map(|v| {
            NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").map_err(|_| CalendarError::BadDate {
                field,
                value: v.clone(),
            })
        })
        .collect()
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl HolidayCalendar {
    /// Parses the calendar file format (see `config/calendars/cn-2026.toml`).
    pub fn from_toml(text: &str) -> Result<Self, CalendarError> {
        let file: CalendarFile =
            toml::from_str(text).map_err(|e| CalendarError::Syntax(e.to_string()))?;
        let holidays = parse_dates("holidays", &file.holidays)?;
        let extra_working_days = parse_dates("working_days", &file.working_days)?;
        if let Some(date) = holidays.intersection(&extra_working_days).next() {
            return Err(CalendarError::Conflict { date: *date });
        }
        if let Some(date) = extra_working_days.iter().find(|d| !is_weekend(**d)) {
            return Err(CalendarError::NotAWeekend {
                date: *date,
                weekday: date.weekday(),
            });
        }
        let years = if file.years.is_empty() {
            holidays
                .iter()
                .chain(&extra_working_days)
                .map(|d| d.year())
                .collect()
        } else {
            file.years.iter().copied().collect()
        };
        Ok(HolidayCalendar {
            name: file.name,
            holidays,
            extra_working_days,
            years,
        })
    }

    /// Loads `path`: one calendar file, or a directory whose `*.toml` files (one per
    /// year of one market, e.g. `cn-2026.toml`, `cn-2027.toml`) are merged in name order.
    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        if !path.is_dir() {
            return Self::from_file(path);
        }
        let io = |error| CalendarError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the directory holds no *.toml calendar file",
            )));
        }
        let mut merged = HolidayCalendar::default();
        let mut names = Vec::new();
        for file in &files {
            let cal = Self::from_file(file)?;
            let in_file = |error| CalendarError::InFile {
                path: file.clone(),
                error: Box::new(error),
            };
            if let Some(date) = cal
                .holidays
                .intersection(&merged.extra_working_days)
                .chain(cal.extra_working_days.intersection(&merged.holidays))
                .next()
            {
                return Err(in_file(CalendarError::Conflict { date: *date }));
            }
            names.push(cal.name.clone());
            merged.holidays.extend(cal.holidays);
            merged.extra_working_days.extend(cal.extra_working_days);
            merged.years.extend(cal.years);
        }
        merged.name = names.join("+");
        Ok(merged)
    }

    /// Whether `date` lies in a year this calendar speaks for.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.years.contains(&date.year())
    }

    /// The years among `years` this calendar does not cover, for warnings.
    pub fn missing_years(&self, years: impl IntoIterator<Item = i32>) -> Vec<i32> {
        years
            .into_iter()
            .filter(|y| !self.years.contains(y))
            .collect()
    }

    /// Reads and parses a calendar file; every error names the file.
    pub fn from_file(path: &Path) -> Result<Self, CalendarError> {
        let text = std::fs::read_to_string(path).map_err(|error| CalendarError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_toml(&text).map_err(|e| CalendarError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        // A make-up working day wins over the weekend; a holiday wins over Mon-Fri.
        if self.extra_working_days.contains(&date) {
            return true;
        }
        !is_weekend(date) && !self.holidays.contains(&date)
    }

    /// Moves `date` by `rule` to a business day.
    pub fn adjust(&self, date: NaiveDate, rule: BusinessDayRule) -> NaiveDate {
        match rule {
            BusinessDayRule::None => date,
            BusinessDayRule::Following => self.following(date),
            BusinessDayRule::Preceding => self.preceding(date),
            BusinessDayRule::ModifiedFollowing => {
                let next = self.following(date);
                if (next.year(), next.month()) == (date.year(), date.month()) {
                    next
                } else {
                    self.preceding(date)
                }
            }
        }
    }

    /// First business day on or after `date`. The holiday sets are finite, so this ends
    /// within days; at the end of chrono's date range it stops where it is.
    fn following(&self, date: NaiveDate) -> NaiveDate {
        let mut d = date;
        while !self.is_business_day(d) {
            match d.succ_opt() {
                Some(next) => d = next,
                None => break,
            }
        }
        d
    }

    /// Last business day on or before `date`.
    fn preceding(&self, date: NaiveDate) -> NaiveDate {
        let mut d = date;
        while !self.is_business_day(d) {
            match d.pred_opt() {
                Some(prev) => d = prev,
                None => break,
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn cn2026() -> HolidayCalendar {
        HolidayCalendar::from_toml(include_str!("../../config/calendars/cn-2026.toml"))
            .expect("the shipped calendar parses")
    }

    #[test]
    fn coverage_is_the_years_listed_and_a_directory_merges_its_files() {
        let cal = cn2026();
        assert!(cal.covers(d(2026, 12, 31)));
        assert!(!cal.covers(d(2027, 1, 1)));
        assert_eq!(cal.missing_years([2026, 2027]), vec![2027]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a-2026.toml"),
            "name = \"a-2026\"\nholidays = [\"2026-05-01\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b-2027.toml"),
            "name = \"b-2027\"\nyears = [2027]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let merged = HolidayCalendar::load(dir.path()).unwrap();
        assert_eq!(merged.name, "a-2026+b-2027");
        assert_eq!(
            merged.years.iter().copied().collect::<Vec<_>>(),
            vec![2026, 2027]
        );
        assert!(!merged.is_business_day(d(2026, 5, 1)));
        std::fs::write(
            dir.path().join("c.toml"),
            "name = \"c\"\nworking_days = [\"2026-05-02\"]\nholidays = [\"2026-05-01\"]\n",
        )
        .unwrap();
        // The same dates listed twice are no clash; a holiday on another file's working day is.
        std::fs::write(
            dir.path().join("d.toml"),
            "name = \"d\"\nworking_days = [\"2026-05-02\"]\n",
        )
        .unwrap();
        assert!(HolidayCalendar::load(dir.path()).is_ok());
        std::fs::write(
            dir.path().join("e.toml"),
            "name = \"e\"\nholidays = [\"2026-05-02\"]\n",
        )
        .unwrap();
        let err = HolidayCalendar::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("e.toml") && err.contains("2026-05-02"),
            "{err}"
        );
    }

    #[test]
    fn shipped_cn_2026_calendar_matches_the_state_council_notice() {
        let cal = cn2026();
        assert_eq!(cal.name, "cn-2026");
        // 3 + 9 + 3 + 5 + 3 + 3 + 7 days off; 1 + 2 + 1 + 2 make-up days.
        assert_eq!(cal.holidays.len(), 33);
        assert_eq!(
            cal.extra_working_days.iter().copied().collect::<Vec<_>>(),
            vec![
                d(2026, 1, 4),
                d(2026, 2, 14),
                d(2026, 2, 28),
                d(2026, 5, 9),
                d(2026, 9, 20),
                d(2026, 10, 10)
            ]
        );
        for day in cal.extra_working_days.iter() {
            assert!(is_weekend(*day), "{day} should be a weekend make-up day");
        }
        assert!(cal.holidays.contains(&d(2026, 2, 17))); // Spring Festival day 1
        assert!(cal.holidays.contains(&d(2026, 10, 7)));
    }

    #[test]
    fn business_days_count_make_up_weekends_and_skip_holidays() {
        let cal = cn2026();
        assert!(cal.is_business_day(d(2026, 2, 14))); // Saturday, make-up day
        assert!(cal.is_business_day(d(2026, 1, 4))); // Sunday, make-up day
        assert!(!cal.is_business_day(d(2026, 2, 16))); // Monday, Spring Festival
        assert!(!cal.is_business_day(d(2026, 3, 7))); // ordinary Saturday
        assert!(cal.is_business_day(d(2026, 3, 9))); // ordinary Monday
        let empty = HolidayCalendar::default();
        assert!(empty.is_business_day(d(2026, 2, 16)));
        assert!(!empty.is_business_day(d(2026, 2, 14)));
    }

    #[test]
    fn following_and_preceding_cross_the_spring_festival() {
        let cal = cn2026();
        // Feb 15 (Sun) .. Feb 23 (Mon) off; Feb 14 (Sat) is a make-up working day.
        assert_eq!(
            cal.adjust(d(2026, 2, 17), BusinessDayRule::Following),
            d(2026, 2, 24)
        );
        assert_eq!(
            cal.adjust(d(2026, 2, 17), BusinessDayRule::Preceding),
            d(2026, 2, 14)
        );
        assert_eq!(
            cal.adjust(d(2026, 2, 17), BusinessDayRule::None),
            d(2026, 2, 17)
        );
        // A business day never moves.
        for rule in [
            BusinessDayRule::Following,
            BusinessDayRule::Preceding,
            BusinessDayRule::ModifiedFollowing,
        ] {
            assert_eq!(cal.adjust(d(2026, 2, 14), rule), d(2026, 2, 14));
        }
        // Sunday Mar 1 precedes to the make-up Saturday Feb 28, not to Friday Feb 27.
        assert_eq!(
            cal.adjust(d(2026, 3, 1), BusinessDayRule::Preceding),
            d(2026, 2, 28)
        );
    }

    #[test]
    fn modified_following_stays_in_the_month() {
        let cal = cn2026();
        // Oct 31 2026 is a Saturday; following would be Mon Nov 2, another month, so back
        // to Fri Oct 30.
        assert_eq!(
            cal.adjust(d(2026, 10, 31), BusinessDayRule::ModifiedFollowing),
            d(2026, 10, 30)
        );
        assert_eq!(
            cal.adjust(d(2026, 10, 31), BusinessDayRule::Following),
            d(2026, 11, 2)
        );
        // Mid-month it is plain following: Oct 3 (holiday) -> Oct 8 (Thu).
        assert_eq!(
            cal.adjust(d(2026, 10, 3), BusinessDayRule::ModifiedFollowing),
            d(2026, 10, 8)
        );
        // Sep 27 (Sun, Mid-Autumn) -> following Sep 28 (Mon), same month.
        assert_eq!(
            cal.adjust(d(2026, 9, 27), BusinessDayRule::ModifiedFollowing),
            d(2026, 9, 28)
        );
        // Jan 31 2026 is a Saturday: Mon Feb 2 is next month, so Fri Jan 30.
        let empty = HolidayCalendar::default();
        assert_eq!(
            empty.adjust(d(2026, 1, 31), BusinessDayRule::ModifiedFollowing),
            d(2026, 1, 30)
        );
        // Make-up Saturday Feb 28 2026 is the month's last business day: stays put.
        assert_eq!(
            cal.adjust(d(2026, 2, 28), BusinessDayRule::ModifiedFollowing),
            d(2026, 2, 28)
        );
    }

    #[test]
    fn rejects_unknown_keys_bad_dates_and_conflicts() {
        let unknown = "name = \"x\"\nholiday = [\"2026-01-01\"]\n";
        match HolidayCalendar::from_toml(unknown) {
            Err(CalendarError::Syntax(msg)) => assert!(msg.contains("holiday"), "{msg}"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let bad = "name = \"x\"\nholidays = [\"2026-02-30\"]\n";
        match HolidayCalendar::from_toml(bad) {
            Err(CalendarError::BadDate { field, value }) => {
                assert_eq!(field, "holidays");
                assert_eq!(value, "2026-02-30");
            }
            other => panic!("expected a bad date, got {other:?}"),
        }
        let conflict =
            "name = \"x\"\nholidays = [\"2026-01-04\"]\nworking_days = [\"2026-01-04\"]\n";
        assert!(matches!(
            HolidayCalendar::from_toml(conflict),
            Err(CalendarError::Conflict { date }) if date == d(2026, 1, 4)
        ));
        let weekday = "name = \"x\"\nworking_days = [\"2026-01-05\"]\n";
        assert!(matches!(
            HolidayCalendar::from_toml(weekday),
            Err(CalendarError::NotAWeekend { .. })
        ));
        assert!(matches!(
            HolidayCalendar::from_toml("holidays = []"),
            Err(CalendarError::Syntax(_))
        ));
    }

    #[test]
    fn from_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.toml");
        let err = HolidayCalendar::from_file(&missing).expect_err("missing file");
        assert!(err.to_string().contains("missing.toml"), "{err}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\nholidays = [\"01/01/2026\"]\n").expect("write");
        let err = HolidayCalendar::from_file(&bad).expect_err("bad date");
        let msg = err.to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("01/01/2026"),
            "{msg}"
        );

        let good = dir.path().join("good.toml");
        std::fs::write(&good, "name = \"x\"\nholidays = [\"2026-01-01\"]\n").expect("write");
        let cal = HolidayCalendar::from_file(&good).expect("parses");
        assert!(!cal.is_business_day(d(2026, 1, 1)));
    }
}
