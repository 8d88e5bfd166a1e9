//! The process-wide helper threads that run queued requests, and their queue: shared by every
//! file of the process (see the engine's own doc for why, and how many).

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::dev::file::lock_unpoisoned;
use super::job::Job;

/// How long an idle helper spins before it sleeps.
pub(super) const SPIN: Duration = Duration::from_micros(50);
/// Most helper threads, whatever the core count.
const MAX_HELPERS: usize = 4;
/// Jobs the helpers' queue holds; past that, callers run their requests themselves.
const QUEUE_CAPACITY: usize = 4096;

/// The process-wide helper threads and their queue.
pub(super) struct Helpers {
    /// Helper threads running.
    pub(super) threads: usize,
    queue: ArrayQueue<Job>,
    /// Helpers asleep (or about to sleep) on `work`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    work: Condvar,
}

/// The helpers, started on first use; `None` if no thread could be started (the engine then
/// stays inline).
pub(super) fn helpers() -> Option<&'static Helpers> {
    static HELPERS: OnceLock<Option<Helpers>> = OnceLock::new();
    HELPERS.get_or_init(Helpers::start).as_ref()
}

impl Helpers {
    fn start() -> Option<Self> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).clamp(1, MAX_HELPERS);
        // Threads reach the helpers through `helpers()`, which blocks them until this returns.
        let mut started = 0;
        for i in 0..count {
            let spawned = std::thread::Builder::new().name(format!("strata-helper-{i}")).spawn(|| {
                if let Some(h) = helpers() {
                    h.serve();
                }
            });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then(|| Self {
            threads: started,
            queue: ArrayQueue::new(QUEUE_CAPACITY),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            work: Condvar::new(),
        })
    }

    /// Queues `job`; gives it back if the queue is full. Call [`Helpers::wake`] after a batch.
    pub(super) fn push(&self, job: Job) -> Result<(), Job> {
        self.queue.push(job)
    }

    /// Wakes a sleeping helper for the jobs just pushed.
    pub(super) fn wake(&self) {
        // Pairs with the fence in `serve`: either this sees the sleeper or the sleeper sees the
        // jobs.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) > 0 {
            let _guard = lock_unpoisoned(&self.lock);
            self.work.notify_one();
        }
    }

    /// The front job if more than `keep` are queued.
    pub(super) fn pop_beyond(&self, keep: usize) -> Option<Job> {
        if self.queue.len() <= keep {
            return None;
        }
        self.queue.pop()
    }

    /// A helper's life: run jobs; when there are none, spin a little, then sleep.
    fn serve(&self) -> ! {
        loop {
            if let Some(job) = self.queue.pop() {
                job.run();
                continue;
            }
            let idle_since = Instant::now();
            'spin: while idle_since.elapsed() < SPIN {
                for _ in 0..64 {
                    if !self.queue.is_empty() {
                        break 'spin;
                    }
                    std::hint::spin_loop();
                }
            }
            let guard = lock_unpoisoned(&self.lock);
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let guard = if self.queue.is_empty() { self.work.wait(guard).unwrap_or_else(|e| e.into_inner()) } else { guard };
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
        }
    }
}
