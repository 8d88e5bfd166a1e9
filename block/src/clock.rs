//! Time, as the platform provides it: the kernel reads the TSC, the host a monotonic clock.
//!
//! The block layer never asks the hardware itself; a graph is given a [`Clock`] with
//! [`crate::Graph::set_clock`]. Nodes that wait for time (a driver's `latency-ns`, a throttle
//! bucket refilling) refuse to open on a graph without one rather than wait forever.

/// A monotonic clock.
pub trait Clock {
    /// Nanoseconds since an arbitrary start; never goes backwards.
    fn now_ns(&self) -> u64;
}

/// The host's monotonic clock (`std::time::Instant`).
#[cfg(any(test, feature = "std"))]
pub struct MonotonicClock(std::time::Instant);

#[cfg(any(test, feature = "std"))]
impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self(std::time::Instant::now())
    }
}

#[cfg(any(test, feature = "std"))]
impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "std"))]
impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A clock a test moves by hand.
#[derive(Default)]
pub struct ManualClock(core::cell::Cell<u64>);

impl ManualClock {
    /// Moves the clock `ns` nanoseconds on.
    pub fn advance(&self, ns: u64) {
        self.0.set(self.0.get().saturating_add(ns));
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}
