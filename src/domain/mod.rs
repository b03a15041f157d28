//! The pure middle of repayd: money, schedules, calendars, local work times and policies.
//! Nothing here performs I/O or reads the clock.

pub mod actor;
pub mod calendar;
pub mod delinquency;
pub mod money;
pub mod payday;
pub mod reschedule;
pub mod schedule;
pub mod settlement;
pub mod worktime;

pub use actor::{Actor, ActorError};
pub use calendar::{BusinessDayRule, HolidayCalendar};
pub use money::{Currency, MAX_MINOR, Money, MoneyError, parse_decimal, parse_rate};
pub use schedule::{
    Frequency, Method, RemainderPlacement, RoundingMode, Schedule, ScheduleError,
    ScheduledInstallment, Terms,
};
