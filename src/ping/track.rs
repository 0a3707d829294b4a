//! Which requests are out, and what a reply to one of them counts as: first, duplicate or late.
//! Socket-free: times come from the caller.

use std::collections::{HashMap, VecDeque};
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
    /// An ICMP error about it came: it waits no more (iputils counts it as done, not lost).
    errored: bool,
}

/// The requests sent, by sequence number (a sequence number reused after 65,536 requests
/// replaces the old request, so the map holds at most 65,536 entries: they stay, because a
/// duplicate or a late reply may come at any time), and those still waiting, in send order.
#[derive(Debug)]
pub(crate) struct Tracker {
    sent: HashMap<u16, Sent>,
    /// The requests not yet answered, oldest first (the time-out is the same for all, so this
    /// is also expiry order); answered and expired ones leave from the front, so finding the
    /// next expiry never scans the whole map.
    waiting: VecDeque<(u16, Instant)>,
    timeout: Duration,
}

impl Tracker {
    /// A tracker whose requests time out after `timeout` (ping's `-W`).
    pub(crate) fn new(timeout: Duration) -> Tracker {
        Tracker {
            sent: HashMap::new(),
            waiting: VecDeque::new(),
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
                errored: false,
            },
        );
        self.waiting.push_back((seq, now));
    }

    /// Whether request `seq` was sent.
    pub(crate) fn is_out(&self, seq: u16) -> bool {
        self.sent.contains_key(&seq)
    }

    /// An ICMP error about `seq` came: it is not waited for any longer.
    pub(crate) fn errored(&mut self, seq: u16) {
        if let Some(sent) = self.sent.get_mut(&seq) {
            sent.errored = true;
        }
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
    /// Forgets, from the front, the requests answered, errored, replaced or timed out.
    pub(crate) fn next_expiry(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&(seq, at)) = self.waiting.front() {
            let still_waiting = self
                .sent
                .get(&seq)
                .is_some_and(|s| s.at == at && s.replies == 0 && !s.errored);
            if still_waiting && at + self.timeout > now {
                return Some(at + self.timeout);
            }
            self.waiting.pop_front();
        }
        None
    }

    /// How many requests are kept as possibly waiting (answered ones not yet forgotten count).
    #[cfg(test)]
    fn waiting_len(&self) -> usize {
        self.waiting.len()
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

    /// A long run (65,536 requests, each answered) leaves nothing to scan: the next expiry is
    /// found from the front of the queue, not by walking every request ever sent.
    #[test]
    fn answered_requests_leave_the_waiting_queue() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut tracker = Tracker::new(Duration::from_secs(10));
        for n in 0..65_536u32 {
            let seq = n as u16;
            let at = t0 + us(u64::from(n));
            tracker.sent(seq, at);
            assert_eq!(tracker.reply(seq, at + us(1)), Verdict::First(us(1)));
            assert_eq!(tracker.next_expiry(at + us(1)), None);
            assert!(tracker.waiting_len() <= 1, "{}", tracker.waiting_len());
        }
        // One left unanswered, one errored: only the first still waits.
        tracker.sent(1, t0 + us(70_000));
        tracker.sent(2, t0 + us(70_001));
        tracker.errored(2);
        assert_eq!(
            tracker.next_expiry(t0 + us(70_002)),
            Some(t0 + us(70_000) + Duration::from_secs(10))
        );
        tracker.reply(1, t0 + us(70_003));
        assert_eq!(tracker.next_expiry(t0 + us(70_004)), None);
        assert_eq!(tracker.waiting_len(), 0);
    }
}
