//! A circuit breaker: after `threshold` consecutive failures an upstream is
//! given a rest for `cooldown`, then one trial call decides.
//!
//! Time is a parameter (a monotonic `Instant`), so the logic is testable
//! without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    /// Set while open: when the next trial may go through.
    open_until: Option<Instant>,
    /// Set while half-open: when the trial started. A trial that never
    /// reports (its caller was cancelled) is replaced after a cool-down.
    trial_started: Option<Instant>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: 0,
            open_until: None,
            trial_started: None,
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match (self.open_until, self.trial_started) {
            (Some(until), _) if now < until => BreakerState::Open,
            (Some(_), _) | (None, Some(_)) => BreakerState::HalfOpen,
            (None, None) => BreakerState::Closed,
        }
    }

    /// `Err(remaining)` when the call must be refused.
    /// Lets a request through, or says how long until one may go.
    /// `Ok(true)`: this request is the trial of a half-open breaker.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<bool, Duration> {
        if let Some(until) = self.open_until {
            if now < until {
                return Err(until - now);
            }
            self.open_until = None;
            self.trial_started = Some(now);
            return Ok(true);
        }
        if let Some(started) = self.trial_started {
            let trial_deadline = started + self.cooldown;
            if now < trial_deadline {
                return Err(trial_deadline - now);
            }
            self.trial_started = Some(now);
            return Ok(true);
        }
        Ok(false)
    }

    /// The trial request ended without reaching the upstream (cancelled,
    /// no credential): it proved nothing, so the next request may be the
    /// trial at once rather than after a cool-down.
    pub(crate) fn release_trial(&mut self, now: Instant) {
        if self.trial_started.take().is_some() {
            self.open_until = Some(now);
        }
    }

    pub(crate) fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
        self.trial_started = None;
    }

    pub(crate) fn record_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.trial_started.is_some() || self.consecutive_failures >= self.threshold {
            self.trial_started = None;
            self.open_until = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_lets_one_trial_through() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        let mut b = Breaker::new(3, cool);
        for _ in 0..2 {
            b.admit(t0).unwrap();
            b.record_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.admit(t0).unwrap();
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(b.admit(t0 + Duration::from_secs(9)).is_err());

        let t1 = t0 + cool;
        b.admit(t1).unwrap();
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        // Only one trial at a time.
        assert!(b.admit(t1).is_err());
        // The trial fails: open again at once.
        b.record_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open);

        let t2 = t1 + cool;
        b.admit(t2).unwrap();
        b.record_success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        b.admit(t2).unwrap();
    }

    /// A trial that never reached the upstream (cancelled, no credential)
    /// proves nothing: the next request is the trial at once, not after
    /// another cool-down.
    #[test]
    fn a_trial_given_back_lets_the_next_request_try_at_once() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        let mut b = Breaker::new(1, cool);
        b.record_failure(t0);
        let t1 = t0 + cool;
        assert_eq!(b.admit(t1), Ok(true));
        assert!(b.admit(t1).is_err(), "one trial at a time");
        b.release_trial(t1);
        assert_eq!(b.admit(t1), Ok(true));
        // A request admitted while closed is no trial, and gives nothing back.
        let mut closed = Breaker::new(1, cool);
        assert_eq!(closed.admit(t0), Ok(false));
        closed.release_trial(t0);
        assert_eq!(closed.state(t0), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_trial_is_replaced_after_a_cool_down() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(5);
        let mut b = Breaker::new(1, cool);
        b.record_failure(t0);
        b.admit(t0 + cool).unwrap();
        assert!(b.admit(t0 + cool).is_err());
        b.admit(t0 + cool * 2).unwrap();
    }
}
