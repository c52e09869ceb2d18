//! A server time as the reader sees it: the time of day in their locale and 12/24 h
//! format, and the day it falls on ("Today", "Yesterday", a date). In the browser through
//! `Intl.DateTimeFormat`; natively (tests, the server) in UTC with a 24 h clock.

/// A day on the reader's calendar, comparable: `yyyymmdd`.
pub type DayKey = u32;

/// The reader's time of day of `ts_ms` (ms since the Unix epoch): "19:23", "7:23 PM".
pub fn time_of_day(ts_ms: u64) -> String {
    #[cfg(feature = "hydrate")]
    if let Some(shown) = intl::format(intl::Style::Time, ts_ms) {
        return shown;
    }
    let minutes = ts_ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// The reader's calendar day of `ts_ms`.
pub fn day_of(ts_ms: u64) -> DayKey {
    #[cfg(feature = "hydrate")]
    {
        #[expect(clippy::cast_precision_loss, reason = "ms since 1970 stay far below 2^53")]
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts_ms as f64));
        date.get_full_year() * 10_000 + (date.get_month() + 1) * 100 + date.get_date()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let (year, month, day) = crate::text::civil_date(ts_ms / 86_400_000);
        u32::try_from(year).unwrap_or(0) * 10_000 + month * 100 + day
    }
}

/// What a day separator says for the day of `ts_ms`, seen at `now_ms`: "Today",
/// "Yesterday", or the date in the reader's locale.
pub fn day_label(ts_ms: u64, now_ms: u64) -> String {
    let day = day_of(ts_ms);
    if day == day_of(now_ms) {
        return "Today".to_owned();
    }
    if day == day_of(now_ms.saturating_sub(86_400_000)) {
        return "Yesterday".to_owned();
    }
    #[cfg(feature = "hydrate")]
    if let Some(date) = intl::format(intl::Style::Date, ts_ms) {
        return date;
    }
    let (year, month, day) = crate::text::civil_date(ts_ms / 86_400_000);
    format!("{year}-{month:02}-{day:02}")
}

/// The time now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    #[cfg(feature = "hydrate")]
    {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a positive whole number of ms")]
        let now = js_sys::Date::now() as u64;
        now
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(feature = "hydrate")]
mod intl {
    use js_sys::Intl::DateTimeFormat;
    use wasm_bindgen::JsValue;

    /// What to show of a time.
    #[derive(Clone, Copy)]
    pub(super) enum Style {
        /// Hours and minutes.
        Time,
        /// The full date.
        Date,
    }

    thread_local! {
        // Made once: a formatter reads the locale's data when it is created.
        static TIME: DateTimeFormat = formatter("timeStyle", "short");
        static DATE: DateTimeFormat = formatter("dateStyle", "full");
    }

    fn formatter(key: &str, value: &str) -> DateTimeFormat {
        let options = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&options, &key.into(), &value.into());
        // No locales: the reader's own, with its 12 or 24 h clock.
        DateTimeFormat::new(&js_sys::Array::new(), &options)
    }

    /// `ts_ms` formatted in the reader's locale.
    pub(super) fn format(style: Style, ts_ms: u64) -> Option<String> {
        #[expect(clippy::cast_precision_loss, reason = "ms since 1970 stay far below 2^53")]
        let date = js_sys::Date::new(&JsValue::from_f64(ts_ms as f64));
        let run = |formatter: &DateTimeFormat| formatter.format().call1(formatter, &date).ok()?.as_string();
        match style {
            Style::Time => TIME.with(run),
            Style::Date => DATE.with(run),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_labelled_from_the_readers_today() {
        let now = 1_764_547_200_000 + 10 * 3_600_000; // 2025-12-01 10:00 UTC
        assert_eq!(day_label(now - 3_600_000, now), "Today");
        assert_eq!(day_label(now - 12 * 3_600_000, now), "Yesterday");
        assert_eq!(day_label(now - 3 * 86_400_000, now), "2025-11-28");
        assert_eq!(day_of(now), 20_251_201);
        assert_eq!(time_of_day(now + 5 * 60_000), "10:05");
    }
}
