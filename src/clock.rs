//! Time, as the domain core reads it: the system clock in service, a clock the test moves by hand in tests of
//! expiry and pruning.

use std::{
    fmt::Debug,
    sync::Mutex,
    time::{Duration, SystemTime},
};

/// The source of "now" for deadlines, expiry and pruning.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock at the system's current time.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock at `now`.
    pub fn at(now: SystemTime) -> Self {
        Self { now: Mutex::new(now) }
    }

    /// Moves the clock forward by `by`; it stays where it is if that would pass the latest time the system
    /// can hold.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: SystemTime) {
        *self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
