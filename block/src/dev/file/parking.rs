//! Waiting for requests that other threads complete, without polling every waiting future.
//!
//! Host files are polled devices: nothing interrupts the caller when a helper thread finishes a
//! request. If every waiting request's future asked to be polled again at once, an executor
//! with 32 requests in flight would poll all 32 — each through the whole stack of futures above
//! the device — on every pass, to find the one or two that finished. So only one waiting request
//! at a time, the **spinner**, asks to be polled again; each time it is, it also looks at the
//! others, which are **parked** with their wakers, and wakes those that are done. When the
//! spinner's own request finishes, it wakes one parked request to take its place.
//!
//! All of this is caller-side state, kept with the engine's; the helpers only ever mark a
//! request done.

use std::task::{Context, Waker};

/// The waiting requests of one file, by slot index.
pub(super) struct Parking {
    wakers: Vec<Option<Waker>>,
    /// Slots whose waker is kept in `wakers`.
    parked: Vec<u16>,
    spinner: Option<u16>,
}

impl Parking {
    pub(super) fn new(slots: usize) -> Self {
        Self { wakers: vec![None; slots], parked: Vec::with_capacity(slots), spinner: None }
    }

    /// Request `index` is not done. `may_park`: it will finish without being polled (a helper
    /// or another poll runs it); otherwise it must be polled again, as the spinner does.
    /// `is_done` tells whether a slot's request has finished.
    pub(super) fn wait(&mut self, index: u16, cx: &mut Context<'_>, may_park: bool, is_done: impl Fn(u16) -> bool) {
        if !may_park || self.spinner.is_none_or(|s| s == index) {
            if may_park {
                self.spinner = Some(index);
            }
            self.wake_done(is_done);
            cx.waker().wake_by_ref();
            return;
        }
        let i = usize::from(index);
        match &mut self.wakers[i] {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => {
                if slot.is_none() {
                    self.parked.push(index);
                }
                *slot = Some(cx.waker().clone());
            }
        }
    }

    /// Request `index` finished (its result was taken): it is no longer parked, and if there is
    /// no spinner now (it was the spinner, or none had taken over yet), the parked requests
    /// that are done are woken, and one that is not takes over.
    ///
    /// "None had taken over yet": the request a finishing spinner woke to take over may itself
    /// be done by the time it is polled. It then finishes here without ever spinning, and if
    /// this did not hand the role on again, the parked requests would wait for a wake that no
    /// one sends (the bench hung so at its end, when no new request comes to spin).
    pub(super) fn finished(&mut self, index: u16, is_done: impl Fn(u16) -> bool) {
        if self.wakers[usize::from(index)].take().is_some() {
            self.parked.retain(|&p| p != index);
        }
        if self.spinner == Some(index) {
            self.spinner = None;
        }
        if self.spinner.is_none() && !self.parked.is_empty() {
            self.wake_done(is_done);
            if let Some(next) = self.parked.pop() {
                if let Some(w) = self.wakers[usize::from(next)].take() {
                    w.wake();
                }
            }
        }
    }

    /// Wakes the parked requests that are done.
    fn wake_done(&mut self, is_done: impl Fn(u16) -> bool) {
        let wakers = &mut self.wakers;
        self.parked.retain(|&p| {
            if !is_done(p) {
                return true;
            }
            if let Some(w) = wakers[usize::from(p)].take() {
                w.wake();
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// One request spins; the others park until the spinner sees them done, and when the
    /// spinner finishes, a parked one is woken to take over.
    #[test]
    fn one_spins_the_rest_park() {
        let mut p = Parking::new(4);
        let ws: Vec<_> = (0..3).map(|_| waker()).collect();
        let done = |set: &'static [u16]| move |i: u16| set.contains(&i);
        for (i, (_, w)) in ws.iter().enumerate() {
            p.wait(i as u16, &mut Context::from_waker(w), true, done(&[]));
        }
        // Slot 0 spins (woken at once), 1 and 2 park.
        assert_eq!(ws.iter().map(|(c, _)| c.0.load(Ordering::Relaxed)).collect::<Vec<_>>(), [1, 0, 0]);
        // The spinner polls again and sees 2 done: 2 is woken, 1 stays parked.
        p.wait(0, &mut Context::from_waker(&ws[0].1), true, done(&[2]));
        assert_eq!(ws.iter().map(|(c, _)| c.0.load(Ordering::Relaxed)).collect::<Vec<_>>(), [2, 0, 1]);
        p.finished(2, done(&[0, 2]));
        // The spinner finishes: 1 is woken to take over and then spins.
        p.finished(0, done(&[0]));
        assert_eq!(ws[1].0 .0.load(Ordering::Relaxed), 1);
        p.wait(1, &mut Context::from_waker(&ws[1].1), true, done(&[]));
        assert_eq!(ws[1].0 .0.load(Ordering::Relaxed), 2);
        assert!(p.parked.is_empty());
    }

    /// The request woken to take over from a finished spinner is done by the time it is polled:
    /// it finishes without spinning, and hands the role on to a parked request that is not done.
    #[test]
    fn a_successor_that_is_done_hands_on() {
        let mut p = Parking::new(3);
        let ws: Vec<_> = (0..3).map(|_| waker()).collect();
        let none = |_: u16| false;
        for (i, (_, w)) in ws.iter().enumerate() {
            p.wait(i as u16, &mut Context::from_waker(w), true, none);
        }
        // 0 spins; 1 and 2 park. 0 finishes and wakes 2 (the last parked) to take over.
        p.finished(0, |i| i == 0);
        assert_eq!(ws[2].0 .0.load(Ordering::Relaxed), 1);
        // 2 is done when polled: it finishes, and 1, still waiting, must be woken to spin.
        p.finished(2, |i| i == 2);
        assert_eq!(ws[1].0 .0.load(Ordering::Relaxed), 1, "the parked request was left without a spinner");
        p.wait(1, &mut Context::from_waker(&ws[1].1), true, none);
        assert_eq!(p.spinner, Some(1));
        assert!(p.parked.is_empty());
    }

    /// A request that must be polled again to finish is never parked.
    #[test]
    fn unparkable_requests_spin() {
        let mut p = Parking::new(2);
        let (c0, w0) = waker();
        let (c1, w1) = waker();
        p.wait(0, &mut Context::from_waker(&w0), true, |_| false);
        p.wait(1, &mut Context::from_waker(&w1), false, |_| false);
        assert_eq!((c0.0.load(Ordering::Relaxed), c1.0.load(Ordering::Relaxed)), (1, 1));
        assert!(p.parked.is_empty());
    }
}
