//! The per-thing request throttle the Device Shadow and Jobs engines share: a thing may make a
//! fixed number of requests within one second of the caller's clock, and the rest are refused
//! (429 for shadows, `RequestThrottled` for jobs).
//!
//! A synchronous engine never has a request "in flight", so AWS's in-flight limits are modelled
//! as a count per whole second of the injected clock, which keeps tests deterministic.

use std::collections::HashMap;

/// Counts each thing's requests within the current second.
#[derive(Debug, Clone)]
pub struct PerThingThrottle {
    /// The most requests a thing may make within one second.
    limit: u32,
    /// Thing name -> (the second counted, requests in it).
    windows: HashMap<String, (u64, u32)>,
}

impl PerThingThrottle {
    /// A throttle admitting `limit` requests per thing per second.
    pub fn new(limit: u32) -> Self {
        PerThingThrottle {
            limit,
            windows: HashMap::new(),
        }
    }

    /// Changes the limit.
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Counts a request of `thing` at `now_epoch_s`; `false` when it is over the limit.
    pub fn admit(&mut self, thing: &str, now_epoch_s: u64) -> bool {
        let window = self
            .windows
            .entry(thing.to_owned())
            .or_insert((now_epoch_s, 0));
        if window.0 != now_epoch_s {
            *window = (now_epoch_s, 0);
        }
        if window.1 >= self.limit {
            return false;
        }
        window.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_limit_per_thing_per_second() {
        let mut throttle = PerThingThrottle::new(2);
        assert!(throttle.admit("a", 10));
        assert!(throttle.admit("a", 10));
        assert!(!throttle.admit("a", 10));
        assert!(throttle.admit("b", 10), "things are counted apart");
        assert!(throttle.admit("a", 11), "a new second starts a new count");
    }
}
