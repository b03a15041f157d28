//! How amounts and dates read in a customer's language. Amounts keep every minor digit of
//! their currency (exact to the cent, or the fils); the reader never has to guess the
//! currency, so a symbol is shown only where it is unambiguous and the ISO code otherwise.

use crate::domain::Money;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Weekday};
use chrono_tz::Tz;
use std::fmt;

/// A language repayd writes emails in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locale {
    /// English as written outside the US: `Saturday, 31 January 2026`, 24-hour clock.
    En,
    /// US English: `Saturday, January 31, 2026`, 12-hour clock. Same templates as `En`.
    EnUs,
    /// Simplified Chinese.
    ZhCn,
}

impl Locale {
    pub const ALL: [Locale; 3] = [Locale::En, Locale::EnUs, Locale::ZhCn];

    /// The locale to write in for a customer's locale string: `zh-CN`, `zh_CN`, `zh-Hans`,
    /// `zh-SG` and plain `zh` are Simplified Chinese; anything else (Traditional Chinese
    /// included, which has no templates yet) is English.
    pub fn from_tag(tag: &str) -> Locale {
        let tag = tag.trim().replace('_', "-").to_ascii_lowercase();
        let mut parts = tag.split('-');
        match parts.next() {
            Some("zh") => {}
            Some("en") if parts.next() == Some("us") => return Locale::EnUs,
            _ => return Locale::En,
        }
        match parts.next() {
            None | Some("cn") | Some("hans") | Some("sg") | Some("my") => Locale::ZhCn,
            Some(_) => Locale::En,
        }
    }

    /// The language tag sent as Content-Language: `en`, `en-US`, `zh-CN`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::EnUs => "en-US",
            Locale::ZhCn => "zh-CN",
        }
    }

    /// The template directory: `en` (both English locales) or `zh-CN`.
    pub fn template_dir(&self) -> &'static str {
        match self {
            Locale::En | Locale::EnUs => "en",
            Locale::ZhCn => "zh-CN",
        }
    }

    /// `¥1,066.19`, `$1,066.19`, `JPY 5,000`, `KWD 1.500` (see [`format_money`]).
    pub fn money(&self, money: &Money) -> String {
        format_money(*self, money)
    }

    /// en `Saturday, 31 January 2026`; zh-CN `2026年1月31日（星期六）`.
    pub fn date(&self, date: NaiveDate) -> String {
        match self {
            Locale::En => date.format("%A, %-d %B %Y").to_string(),
            Locale::EnUs => date.format("%A, %B %-d, %Y").to_string(),
            Locale::ZhCn => format!(
                "{}年{}月{}日（{}）",
                date.year(),
                date.month(),
                date.day(),
                zh_weekday(date.weekday())
            ),
        }
    }

    /// For subject lines: en `31 Jan`; zh-CN `1月31日`.
    pub fn date_short(&self, date: NaiveDate) -> String {
        match self {
            Locale::En => date.format("%-d %b").to_string(),
            Locale::EnUs => date.format("%b %-d").to_string(),
            Locale::ZhCn => format!("{}月{}日", date.month(), date.day()),
        }
    }

    /// A local date and time (already in the customer's time zone), without a zone:
    /// en `18:00 on Friday, 30 January 2026`; zh-CN `2026年1月30日（星期五）18:00`.
    /// Customer emails use [`Locale::date_time_at`], which names the zone.
    pub fn date_time(&self, at: NaiveDateTime) -> String {
        self.date_time_with(at, None)
    }

    /// For subject lines: en `18:00, 30 Jan`; zh-CN `1月30日18:00`.
    pub fn date_time_short(&self, at: NaiveDateTime) -> String {
        self.date_time_short_with(at, None)
    }

    /// An instant in the customer's time zone, naming the zone: en `18:00 GMT on Friday,
    /// 30 January 2026`; en-US `6:00 PM EST on Friday, January 30, 2026`; zh-CN
    /// `2026年1月30日（星期五）18:00（北京时间）`.
    pub fn date_time_at(&self, at: DateTime<Tz>) -> String {
        self.date_time_with(at.naive_local(), Some(&zone_name(*self, &at)))
    }

    /// For subject lines, naming the zone: en `18:00 GMT, 30 Jan`; en-US `6:00 PM EST,
    /// Jan 30`; zh-CN `1月30日18:00（北京时间）`.
    pub fn date_time_short_at(&self, at: DateTime<Tz>) -> String {
        self.date_time_short_with(at.naive_local(), Some(&zone_name(*self, &at)))
    }

    fn time_of(&self, at: NaiveDateTime, zone: Option<&str>) -> String {
        let time = match self {
            Locale::EnUs => at.format("%-I:%M %p").to_string(),
            Locale::En | Locale::ZhCn => at.format("%H:%M").to_string(),
        };
        match (self, zone) {
            (_, None) => time,
            (Locale::ZhCn, Some(zone)) => format!("{time}（{zone}）"),
            (_, Some(zone)) => format!("{time} {zone}"),
        }
    }

    fn date_time_with(&self, at: NaiveDateTime, zone: Option<&str>) -> String {
        let time = self.time_of(at, zone);
        match self {
            Locale::En | Locale::EnUs => format!("{time} on {}", self.date(at.date())),
            Locale::ZhCn => format!("{}{time}", self.date(at.date())),
        }
    }

    fn date_time_short_with(&self, at: NaiveDateTime, zone: Option<&str>) -> String {
        let time = self.time_of(at, zone);
        match self {
            Locale::En | Locale::EnUs => format!("{time}, {}", self.date_short(at.date())),
            Locale::ZhCn => format!("{}{time}", self.date_short(at.date())),
        }
    }
}

/// The zone as a reader of `locale` names it: the tz database abbreviation (`EST`,
/// `GMT`, `CST`), or for Chinese readers in China's zone `北京时间`, the name they use.
fn zone_name(locale: Locale, at: &DateTime<Tz>) -> String {
    let china = matches!(
        at.timezone(),
        Tz::Asia__Shanghai | Tz::Asia__Chongqing | Tz::Asia__Harbin | Tz::PRC
    );
    if china && locale == Locale::ZhCn {
        return "北京时间".to_string();
    }
    at.format("%Z").to_string()
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn zh_weekday(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "星期一",
        Weekday::Tue => "星期二",
        Weekday::Wed => "星期三",
        Weekday::Thu => "星期四",
        Weekday::Fri => "星期五",
        Weekday::Sat => "星期六",
        Weekday::Sun => "星期日",
    }
}

/// An amount for a customer: every minor digit, thousands grouped with `,`.
///
/// The symbol comes first where readers of that language take it for one currency only:
/// in English `$` (USD), `€`, `£` and `¥` (CNY); in Chinese only `¥` (CNY, which is what
/// a Chinese reader takes `¥` to mean). Everything else shows its ISO code (`JPY 5,000`,
/// `AUD 10.00`, `KWD 1.500`): `$` or `¥` alone would be ambiguous, and the symbol data
/// for some currencies (CHF as `₣`) is not what their users write.
pub fn format_money(locale: Locale, money: &Money) -> String {
    let currency = money.currency();
    let code = currency.code();
    let with_symbol = match locale {
        Locale::En | Locale::EnUs => matches!(code, "USD" | "EUR" | "GBP" | "CNY"),
        Locale::ZhCn => code == "CNY",
    };
    let plain = money.plain();
    let (sign, digits) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let grouped = group_thousands(digits);
    if with_symbol {
        format!("{sign}{}{grouped}", currency.symbol())
    } else {
        format!("{code} {sign}{grouped}")
    }
}

/// `1234567.89` -> `1,234,567.89`.
fn group_thousands(plain: &str) -> String {
    let (int, frac) = match plain.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (plain, None),
    };
    let mut out = String::with_capacity(plain.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    fn money(amount: &str, code: &str) -> Money {
        Money::parse(amount, Currency::parse(code).unwrap()).unwrap()
    }

    #[test]
    fn times_follow_the_locale_and_name_the_zone() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let london: Tz = "Europe/London".parse().unwrap();
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
        let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2027, 1, 30, 23, 0, 0).unwrap();
        assert_eq!(
            Locale::EnUs.date_time_at(at.with_timezone(&ny)),
            "6:00 PM EST on Saturday, January 30, 2027"
        );
        assert_eq!(
            Locale::EnUs.date_time_short_at(at.with_timezone(&ny)),
            "6:00 PM EST, Jan 30"
        );
        assert_eq!(
            Locale::En.date_time_at(at.with_timezone(&london)),
            "23:00 GMT on Saturday, 30 January 2027"
        );
        // Summer time is named as such.
        let july = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2027, 7, 1, 8, 0, 0).unwrap();
        assert_eq!(
            Locale::En.date_time_short_at(july.with_timezone(&london)),
            "09:00 BST, 1 Jul"
        );
        assert_eq!(
            Locale::ZhCn.date_time_at(at.with_timezone(&shanghai)),
            "2027年1月31日（星期日）07:00（北京时间）"
        );
        assert_eq!(
            Locale::En.date_time_at(at.with_timezone(&shanghai)),
            "07:00 CST on Sunday, 31 January 2027"
        );
    }

    #[test]
    fn locale_falls_back_to_english() {
        for tag in [
            "zh-CN",
            "zh_CN",
            "zh-Hans",
            "zh",
            "ZH-cn",
            "zh-Hans-CN",
            " zh-SG ",
        ] {
            assert_eq!(Locale::from_tag(tag), Locale::ZhCn, "{tag}");
        }
        for tag in [
            "en", "en_GB", "", "fr-FR", "zh-TW", "zh-Hant", "zhx", "klingon",
        ] {
            assert_eq!(Locale::from_tag(tag), Locale::En, "{tag}");
        }
        for tag in ["en-US", "en_us", "EN-US"] {
            assert_eq!(Locale::from_tag(tag), Locale::EnUs, "{tag}");
        }
        assert_eq!(Locale::EnUs.template_dir(), "en");
        assert_eq!(Locale::ZhCn.as_str(), "zh-CN");
        assert_eq!(Locale::En.to_string(), "en");
    }

    #[test]
    fn amounts_keep_every_digit_and_group_thousands() {
        let en = Locale::En;
        assert_eq!(en.money(&money("1066.19", "CNY")), "¥1,066.19");
        assert_eq!(en.money(&money("1066.19", "USD")), "$1,066.19");
        assert_eq!(en.money(&money("0.5", "USD")), "$0.50");
        assert_eq!(en.money(&money("999", "EUR")), "€999.00");
        assert_eq!(en.money(&money("1000", "GBP")), "£1,000.00");
        assert_eq!(en.money(&money("5000", "JPY")), "JPY 5,000");
        assert_eq!(en.money(&money("1.5", "KWD")), "KWD 1.500");
        assert_eq!(en.money(&money("1234567.125", "KWD")), "KWD 1,234,567.125");
        assert_eq!(
            en.money(&money("12345678901.23", "CNY")),
            "¥12,345,678,901.23"
        );
        assert_eq!(en.money(&money("100000", "CNY")), "¥100,000.00");
        assert_eq!(en.money(&money("10", "AUD")), "AUD 10.00");
        assert_eq!(en.money(&money("-1234.5", "USD")), "-$1,234.50");
        assert_eq!(en.money(&money("-1234", "JPY")), "JPY -1,234");

        let zh = Locale::ZhCn;
        assert_eq!(zh.money(&money("1066.19", "CNY")), "¥1,066.19");
        assert_eq!(zh.money(&money("120.5", "CNY")), "¥120.50");
        assert_eq!(zh.money(&money("1066.19", "USD")), "USD 1,066.19");
        assert_eq!(zh.money(&money("5000", "JPY")), "JPY 5,000");
        assert_eq!(zh.money(&money("0", "KWD")), "KWD 0.000");
    }

    #[test]
    fn dates_read_naturally_in_each_language() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        assert_eq!(Locale::En.date(d), "Saturday, 31 January 2026");
        assert_eq!(Locale::ZhCn.date(d), "2026年1月31日（星期六）");
        assert_eq!(Locale::En.date_short(d), "31 Jan");
        assert_eq!(Locale::ZhCn.date_short(d), "1月31日");
        let at = NaiveDate::from_ymd_opt(2026, 2, 1)
            .unwrap()
            .and_hms_opt(18, 0, 0)
            .unwrap();
        assert_eq!(Locale::En.date_time(at), "18:00 on Sunday, 1 February 2026");
        assert_eq!(Locale::ZhCn.date_time(at), "2026年2月1日（星期日）18:00");
        assert_eq!(Locale::En.date_time_short(at), "18:00, 1 Feb");
        assert_eq!(Locale::ZhCn.date_time_short(at), "2月1日18:00");
    }
}
