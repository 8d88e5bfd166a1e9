//! A ready-flag executor for `img bench`'s workers, the host twin of the guest kernel's
//! (`kernel/src/executor.rs`): each task has a flag its waker sets, and a round polls exactly the
//! tasks whose flag is set, between two hooks that make the round one submission batch.
//!
//! Why not `futures`' `join_all` under `block_on` (what the bench used before): at queue depth 32
//! the waiting request that spins ([`strata_block`]'s host-file `Parking`) wakes itself on every
//! poll, and each of those wakes cost `FuturesUnordered`'s enqueue plus `block_on`'s thread
//! notification, five locked read-modify-writes. Setting a flag is a plain store; the round's
//! check is a plain load and, for a set flag, one swap. The bench's caller thread is the
//! bottleneck at depth, so what its executor costs shows in the IOPS.
//!
//! Wakers may be called from any thread: a flag is an atomic, and a round that finds no flag set
//! spins and then yields, so a wake from another thread is seen without a park/unpark pair.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Empty rounds in a row after which an idle loop yields its core instead of only spinning.
const SPINS_BEFORE_YIELD: u32 = 1024;

/// A task's ready flag; its waker sets it.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

struct Task<F: Future> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// Made once: a poll lends it, so only a waiter that keeps it clones it.
    waker: Waker,
    output: Option<F::Output>,
}

/// Runs `futures` to completion, each round of polls between `begin_round()` and
/// `end_round()`, and returns their outputs in order.
pub fn run_all<F: Future>(futures: impl IntoIterator<Item = F>, begin_round: impl Fn(), end_round: impl Fn()) -> Vec<F::Output> {
    let mut tasks: Vec<Task<F>> = futures
        .into_iter()
        .map(|f| {
            let flag = Arc::new(Flag(AtomicBool::new(true)));
            Task { future: Box::pin(f), waker: Waker::from(flag.clone()), flag, output: None }
        })
        .collect();
    let mut remaining = tasks.len();
    let mut idle = 0u32;
    while remaining > 0 {
        let mut in_round = false;
        for task in tasks.iter_mut() {
            // A plain load first: most tasks are not ready in most rounds, and a swap is a
            // locked read-modify-write.
            let flag = &task.flag.0;
            if task.output.is_some() || !flag.load(Ordering::Relaxed) || !flag.swap(false, Ordering::Acquire) {
                continue;
            }
            if !in_round {
                in_round = true;
                begin_round();
            }
            if let Poll::Ready(v) = task.future.as_mut().poll(&mut Context::from_waker(&task.waker)) {
                task.output = Some(v);
                remaining -= 1;
            }
        }
        if in_round {
            end_round();
            idle = 0;
        } else {
            idle += 1;
            if idle >= SPINS_BEFORE_YIELD {
                idle = 0;
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    tasks.into_iter().filter_map(|t| t.output).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Tasks that wait on each other and on another thread all finish, each polled only when
    /// woken, and every poll falls inside a round.
    #[test]
    fn runs_woken_tasks_in_rounds() {
        let in_round = Cell::new(false);
        let (rounds, polls) = (Cell::new(0), Cell::new(0));
        let turn = Cell::new(0usize);
        let counted = |i: usize| {
            let (in_round, polls, turn) = (&in_round, &polls, &turn);
            std::future::poll_fn(move |cx| {
                assert!(in_round.get(), "polled outside a round");
                polls.set(polls.get() + 1);
                // The last task's turn comes first, so the others wait to be woken.
                if turn.get() == 3 - i {
                    turn.set(turn.get() + 1);
                    return Poll::Ready(i * 10);
                }
                // Not our turn: a thread wakes us a little later.
                let waker = cx.waker().clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    waker.wake();
                });
                Poll::Pending
            })
        };
        let out = run_all(
            (0..4).map(counted),
            || {
                in_round.set(true);
                rounds.set(rounds.get() + 1);
            },
            || in_round.set(false),
        );
        assert_eq!(out, [0, 10, 20, 30]);
        assert!(rounds.get() >= 4 && polls.get() >= 7, "rounds {} polls {}", rounds.get(), polls.get());
    }
}
