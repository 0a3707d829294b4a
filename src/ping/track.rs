//! Which requests are out, and what a reply to one of them counts as: first, duplicate or late.
//! Socket-free: times come from the caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a reply with a given sequence number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The first reply to a request still within its time-out.
    First(Duration),
    /// A further reply to a request already answered.
    Duplicate(Duration),
    /// The first reply to a request whose time-out had passed (it was counted lost).
    Late(Duration),
    /// No request of ours has this sequence number.
    Unknown,
}

#[derive(Debug)]
struct Sent {
    at: Instant,
    replies: u32,
}

/// The requests sent, by sequence number (a sequence number reused after 65,536 requests
/// replaces the old request).
#[derive(Debug)]
pub(crate) struct Tracker {
    sent: HashMap<u16, Sent>,
    timeout: Duration,
}

impl Tracker {
    /// A tracker whose requests time out after `timeout` (ping's `-W`).
    pub(crate) fn new(timeout: Duration) -> Tracker {
        Tracker {
            sent: HashMap::new(),
            timeout,
        }
    }

    /// Request `seq` left at `now`.
    pub(crate) fn sent(&mut self, seq: u16, now: Instant) {
        self.sent.insert(
            seq,
            Sent {
                at: now,
                replies: 0,
            },
        );
    }

    /// A reply to `seq` arrived at `now`.
    pub(crate) fn reply(&mut self, seq: u16, now: Instant) -> Verdict {
        let Some(sent) = self.sent.get_mut(&seq) else {
            return Verdict::Unknown;
        };
        let rtt = now.saturating_duration_since(sent.at);
        sent.replies += 1;
        match sent.replies {
            1 if rtt <= self.timeout => Verdict::First(rtt),
            1 => Verdict::Late(rtt),
            _ => Verdict::Duplicate(rtt),
        }
    }

    /// When the earliest unanswered request still waiting times out, if one is waiting at `now`.
    pub(crate) fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.sent
            .values()
            .filter(|s| s.replies == 0)
            .map(|s| s.at + self.timeout)
            .filter(|&expiry| expiry > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_first_then_duplicate_and_late_after_the_time_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut tracker = Tracker::new(ms(100));
        tracker.sent(1, t0);
        tracker.sent(2, t0 + ms(10));
        assert_eq!(tracker.next_expiry(t0), Some(t0 + ms(100)));
        assert_eq!(tracker.reply(1, t0 + ms(5)), Verdict::First(ms(5)));
        assert_eq!(tracker.reply(1, t0 + ms(6)), Verdict::Duplicate(ms(6)));
        assert_eq!(tracker.next_expiry(t0 + ms(6)), Some(t0 + ms(110)));
        assert_eq!(tracker.next_expiry(t0 + ms(110)), None);
        assert_eq!(tracker.reply(2, t0 + ms(200)), Verdict::Late(ms(190)));
        assert_eq!(tracker.reply(2, t0 + ms(201)), Verdict::Duplicate(ms(191)));
        assert_eq!(tracker.reply(3, t0), Verdict::Unknown);
    }
}
