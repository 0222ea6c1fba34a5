//! Restart delays for a supervised connection: 0.5 s doubling to 30 s,
//! back to 0.5 s once a connection stayed up for a minute.

use std::time::Duration;

pub(crate) const INITIAL: Duration = Duration::from_millis(500);
pub(crate) const MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long is considered healthy again.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: INITIAL }
    }

    /// The delay before the next attempt, given how long the last
    /// connection lived (`None`: it never came up).
    pub(crate) fn next_delay(&mut self, lived: Option<Duration>) -> Duration {
        if lived.is_some_and(|l| l >= STABLE_AFTER) {
            self.next = INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..9).map(|_| b.next_delay(None)).collect();
        assert_eq!(delays[0], INITIAL);
        assert_eq!(delays[1], INITIAL * 2);
        assert_eq!(*delays.last().unwrap(), MAX);
        assert_eq!(b.next_delay(Some(Duration::from_secs(1))), MAX);
        assert_eq!(b.next_delay(Some(STABLE_AFTER)), INITIAL);
    }
}
