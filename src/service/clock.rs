//! Daytime (RFC 867, port 13) and time (RFC 868, port 37): the time from the request's
//! [`Context::now`], so the services themselves read no clock.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::{Context, Next, Service, StreamSession};

/// Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01.
pub const SECONDS_1900_TO_1970: u64 = 2_208_988_800;

/// A session that sends one reply on connect and closes: daytime, time, qotd.
#[derive(Debug)]
pub struct OneShotSession(pub(crate) Option<BytesMut>);

impl StreamSession for OneShotSession {
    fn on_open(&mut self, out: &mut BytesMut) -> Next {
        if let Some(reply) = self.0.take() {
            out.extend_from_slice(&reply);
        }
        Next::Close
    }
    fn on_data(&mut self, _input: &[u8], _out: &mut BytesMut) -> Next {
        Next::Close
    }
}

/// The daytime service: the date and time as one line of text, in UTC.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let when = UNIX_EPOCH + Duration::from_secs(383_247_463);
/// assert_eq!(socketkit::service::daytime_text(when), "Monday, February 22, 1982 17:37:43-UTC\r\n");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Daytime;

impl Service for Daytime {
    type Session = OneShotSession;
    fn name(&self) -> &str {
        "daytime"
    }
    fn session(&self, ctx: &Context) -> OneShotSession {
        OneShotSession(Some(BytesMut::from(daytime_text(ctx.now).as_bytes())))
    }
    fn message(&self, ctx: &Context, _request: &[u8], reply: &mut BytesMut) -> bool {
        reply.extend_from_slice(daytime_text(ctx.now).as_bytes());
        true
    }
}

/// The time service: seconds since 1900-01-01 00:00 UTC as a 32-bit big-endian number.
///
/// ```
/// use std::time::UNIX_EPOCH;
/// assert_eq!(socketkit::service::time_bytes(UNIX_EPOCH), 2_208_988_800u32.to_be_bytes());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Time;

impl Service for Time {
    type Session = OneShotSession;
    fn name(&self) -> &str {
        "time"
    }
    fn session(&self, ctx: &Context) -> OneShotSession {
        OneShotSession(Some(BytesMut::from(&time_bytes(ctx.now)[..])))
    }
    fn message(&self, ctx: &Context, _request: &[u8], reply: &mut BytesMut) -> bool {
        reply.extend_from_slice(&time_bytes(ctx.now));
        true
    }
}

/// RFC 868's answer for `when`: it wraps in 2036, as the RFC's 32 bits do.
pub fn time_bytes(when: SystemTime) -> [u8; 4] {
    let unix = unix_seconds(when);
    ((unix + SECONDS_1900_TO_1970 as i64) as u32).to_be_bytes()
}

/// RFC 867's answer for `when`, in the RFC's example format, UTC, ending in CRLF.
pub fn daytime_text(when: SystemTime) -> String {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = unix_seconds(when);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {} {}, {} {:02}:{:02}:{:02}-UTC\r\n",
        DAYS[days.rem_euclid(7) as usize], // 1970-01-01 was a Thursday
        MONTHS[(month - 1) as usize],
        day,
        year,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The day of the year for quote rotation: days since 1970.
pub(crate) fn unix_days(when: SystemTime) -> i64 {
    unix_seconds(when).div_euclid(86_400)
}

fn unix_seconds(when: SystemTime) -> i64 {
    match when.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Year, month (1-12), day (1-31) of a day count since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
    }

    #[test]
    fn daytime_and_time_agree() {
        let when = UNIX_EPOCH + Duration::from_secs(1_763_700_000);
        assert_eq!(
            daytime_text(when),
            "Friday, November 21, 2025 04:40:00-UTC\r\n"
        );
        let secs = u32::from_be_bytes(time_bytes(when));
        assert_eq!(u64::from(secs), 1_763_700_000 + SECONDS_1900_TO_1970);
    }
}
