//! Connection slots for the thread engines: `max_connections` permits, taken before `accept()`
//! so that at the limit new clients wait in the kernel's listen queue (HAProxy's behaviour)
//! instead of costing a thread or a descriptor. The drain after shutdown waits for every permit.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    in_use: usize,
    closed: bool,
}

/// One connection's slot, given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Slots>);

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_use -= 1;
        self.0.changed.notify_all();
    }
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            state: Mutex::new(State {
                in_use: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// A permit if one is free now.
    pub(crate) fn try_acquire(self: &Arc<Slots>) -> Option<Permit> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.in_use < self.max && !state.closed {
            state.in_use += 1;
            return Some(Permit(self.clone()));
        }
        None
    }

    /// Waits for a free permit; `None` once the slots are closed (shutdown).
    pub(crate) fn acquire(self: &Arc<Slots>) -> Option<Permit> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.closed {
                return None;
            }
            if state.in_use < self.max {
                state.in_use += 1;
                return Some(Permit(self.clone()));
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A permit now, past the limit or after [`Slots::close`] if need be: for the connections
    /// already in the listen queue at shutdown, which are accepted and served (at most the
    /// backlog).
    pub(crate) fn acquire_at_shutdown(self: &Arc<Slots>) -> Permit {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_use += 1;
        Permit(self.clone())
    }

    /// Wakes every waiter in [`Slots::acquire`] with `None`; permits already out stay valid.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        self.changed.notify_all();
    }

    /// Waits until every permit is back, at most `timeout` (`None`: no limit). Returns whether
    /// all came back.
    pub(crate) fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.in_use > 0 {
            match deadline {
                None => state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_come_back() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert!(slots.try_acquire().is_some());
        assert!(!slots.wait_idle(Some(Duration::from_millis(1))));
    }

    #[test]
    fn close_wakes_a_waiter() {
        let slots = Slots::new(1);
        let _held = slots.acquire().unwrap();
        let waiter = {
            let slots = slots.clone();
            std::thread::spawn(move || slots.acquire().is_none())
        };
        slots.close();
        assert!(waiter.join().unwrap());
    }
}
