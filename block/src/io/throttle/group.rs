//! A throttle group (QEMU's `block/throttle-groups.c`): one set of buckets shared by its
//! members (the `throttle` nodes naming it), requests of each member let through in order,
//! and the members served round-robin, so one busy member cannot starve another.
//!
//! Nothing here queues: in a polled system a held request is a pending future that looks
//! again each time it is polled. Order is kept with tickets instead — each member and
//! direction numbers its requests and serves them in number order; a request cancelled while
//! it waits gives its number up (its `Drop`), so the ones behind it are not stuck. The group's
//! token says which member's turn it is; when a member's request goes, the token moves on to
//! the next member with requests waiting, as QEMU's `next_throttle_token` does.

use core::cell::RefCell;

use super::bucket::{Buckets, Direction};
use super::config::ThrottleConfig;
use crate::error::{Error, Result};
use crate::io::wait;
use crate::io::Io;

/// Most members (throttle nodes) a group has.
pub const MAX_MEMBERS: usize = 8;
/// Longest group name kept.
pub const MAX_NAME: usize = 32;
/// Requests a member may have waiting per direction; more wait for a number (back-pressure).
const WINDOW: u32 = 64;

/// One member's requests in one direction: numbers handed out, the number being served, and
/// which of the numbers after it are already done (went or were cancelled).
#[derive(Clone, Copy, Debug, Default)]
struct Lane {
    next: u32,
    serving: u32,
    done_ahead: u64,
}

impl Lane {
    fn waiting(&self) -> u32 {
        self.next.wrapping_sub(self.serving)
    }

    /// Marks `ticket` done and moves `serving` past every done number.
    fn finish(&mut self, ticket: u32) {
        let ahead = ticket.wrapping_sub(self.serving);
        if ahead < 64 {
            self.done_ahead |= 1 << ahead;
        }
        while self.done_ahead & 1 != 0 {
            self.done_ahead >>= 1;
            self.serving = self.serving.wrapping_add(1);
        }
    }
}

#[derive(Debug)]
struct State {
    buckets: Buckets,
    joined: [bool; MAX_MEMBERS],
    lanes: [[Lane; 2]; MAX_MEMBERS],
    token: [usize; 2],
}

impl State {
    /// The member after `from` in round-robin order, among joined ones.
    fn after(&self, from: usize) -> usize {
        (1..=MAX_MEMBERS).map(|i| (from + i) % MAX_MEMBERS).find(|&m| self.joined[m]).unwrap_or(from)
    }

    /// QEMU's `next_throttle_token`: the next member after the token holder with requests
    /// waiting, or `me` if none has.
    fn next_token(&self, dir: Direction, me: usize) -> usize {
        let d = dir as usize;
        let start = self.token[d];
        let mut m = self.after(start);
        while m != start && self.lanes[m][d].waiting() == 0 {
            m = self.after(m);
        }
        if self.lanes[m][d].waiting() == 0 {
            me
        } else {
            m
        }
    }

    /// Lets request `ticket` of member `me` go if it is that member's next, it is the member's
    /// turn (or the member whose turn it is has nothing waiting), and the buckets allow it — or,
    /// with `drained`, in order but without waiting for the buckets. A request that goes is
    /// charged (QEMU charges drained requests too).
    fn try_go(&mut self, me: usize, dir: Direction, ticket: u32, bytes: u64, now_ns: u64, drained: bool) -> bool {
        let d = dir as usize;
        if self.lanes[me][d].serving != ticket {
            return false;
        }
        if !drained {
            let holder = self.token[d];
            if holder != me && self.joined[holder] && self.lanes[holder][d].waiting() > 0 {
                return false;
            }
            if self.buckets.wait_ns(dir, now_ns) > 0 {
                return false;
            }
        }
        self.buckets.account(dir, bytes);
        self.lanes[me][d].finish(ticket);
        self.token[d] = self.next_token(dir, me);
        true
    }
}

/// A named throttle group.
#[derive(Debug)]
pub struct ThrottleGroup {
    name: heapless::String<MAX_NAME>,
    state: RefCell<State>,
}

impl ThrottleGroup {
    /// A group named `name` with limits `cfg` (checked).
    pub fn new(name: &str, cfg: ThrottleConfig) -> Result<Self> {
        cfg.check()?;
        let mut kept = heapless::String::new();
        if name.is_empty() || kept.push_str(name).is_err() {
            return Err(Error::BadOption { key: "id", why: "a throttle group name must be 1 to 32 bytes" });
        }
        let state = State { buckets: Buckets::new(cfg, 0), joined: [false; MAX_MEMBERS], lanes: [[Lane::default(); 2]; MAX_MEMBERS], token: [0; 2] };
        Ok(Self { name: kept, state: RefCell::new(state) })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's limits.
    pub fn config(&self) -> ThrottleConfig {
        *self.state.borrow().buckets.config()
    }

    /// Adds a member; its index names it in [`ThrottleGroup::admit`].
    pub fn join(&self) -> Result<usize> {
        let mut st = self.state.borrow_mut();
        let m = st.joined.iter().position(|j| !j).ok_or(Error::NoSpace { what: "throttle group members" })?;
        st.joined[m] = true;
        st.lanes[m] = [Lane::default(); 2];
        if !st.joined[st.token[0]] {
            st.token = [m; 2];
        }
        Ok(m)
    }

    /// Removes member `m` (it has nothing waiting: its node is closing).
    pub fn leave(&self, m: usize) {
        let mut st = self.state.borrow_mut();
        if let Some(j) = st.joined.get_mut(m) {
            *j = false;
        }
        for d in 0..2 {
            if st.token[d] == m {
                st.token[d] = st.after(m);
            }
        }
    }

    /// Holds a request of `bytes` in `dir` from member `m` until the group lets it go, then
    /// charges it; a drain ([`crate::Graph::release_held`]) lets held requests go at once.
    pub async fn admit(&self, io: &Io<'_, '_>, m: usize, dir: Direction, bytes: u64) -> Result<()> {
        let clock = io.clock.ok_or(Error::Unsupported("throttling on a graph without a clock (Graph::set_clock)"))?;
        let d = dir as usize;
        if m >= MAX_MEMBERS {
            return Err(Error::BadGraph("throttle member out of range"));
        }
        let ticket = wait::take(|| {
            let mut st = self.state.borrow_mut();
            let lane = &mut st.lanes[m][d];
            (lane.waiting() < WINDOW).then(|| {
                lane.next = lane.next.wrapping_add(1);
                lane.next.wrapping_sub(1)
            })
        })
        .await;
        let mut place = Place { group: self, m, d, ticket, gone: false };
        wait::until(|| self.state.borrow_mut().try_go(m, dir, ticket, bytes, clock.now_ns(), io.release.get() > 0)).await;
        place.gone = true;
        Ok(())
    }
}

/// A request's number while it waits: given up if the request is dropped before it goes.
struct Place<'a> {
    group: &'a ThrottleGroup,
    m: usize,
    d: usize,
    ticket: u32,
    gone: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.gone {
            if let Ok(mut st) = self.group.state.try_borrow_mut() {
                st.lanes[self.m][self.d].finish(self.ticket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests
    use super::*;

    #[test]
    fn lanes_skip_numbers_given_up_out_of_order() {
        let mut lane = Lane { next: 3, ..Lane::default() };
        lane.finish(1);
        assert_eq!(lane.serving, 0);
        lane.finish(0);
        assert_eq!(lane.serving, 2);
        lane.finish(2);
        assert_eq!((lane.serving, lane.waiting()), (3, 0));
    }

    #[test]
    fn members_take_turns() {
        let mut cfg = ThrottleConfig::UNLIMITED;
        cfg.buckets[super::super::config::BucketKind::OpsTotal as usize].avg = 10;
        let g = ThrottleGroup::new("g", cfg).unwrap();
        let (a, b) = (g.join().unwrap(), g.join().unwrap());
        let mut st = g.state.borrow_mut();
        // Both members have two requests waiting.
        for m in [a, b] {
            st.lanes[m][0].next = 2;
        }
        st.token = [a; 2];
        // The buckets allow one at a time: a, then b, then a.
        assert!(st.try_go(a, Direction::Read, 0, 512, 0, false));
        assert_eq!(st.token[0], b);
        assert!(!st.try_go(a, Direction::Read, 1, 512, 10_000_000_000, false));
        assert!(st.try_go(b, Direction::Read, 0, 512, 10_000_000_000, false));
        assert!(st.try_go(a, Direction::Read, 1, 512, 20_000_000_000, false));
    }
}
