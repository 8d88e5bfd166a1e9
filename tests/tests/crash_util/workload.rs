//! A seeded guest workload for the crash tests: writes (512 B to 256 KiB, a quarter of them
//! unaligned), write-zeroes, discards and flushes from several workers at once, with every
//! operation's submission and completion stamped on one logical clock and on the recording's
//! seq counter.
//!
//! Operations in flight never overlap (a worker picks another range), so the order of two
//! operations on the same bytes is their completion order and the model stays exact.
//!
//! `strata_block::cmd::stress` (the `stress` workload) has the same no-overlap design and could
//! drive these tests too; this one stays because it stamps each operation on the recording's
//! seq counter, which is what the cut checker needs.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use qemu_runner::img::block::dev::record::Seq;
use qemu_runner::img::block::Backend;

/// The harness's seeded generator: the runner's, so cuts and workloads share one.
pub use qemu_runner::img::rng::Rng;

/// The bytes a write of `len` with `seed` carries.
pub fn data(seed: u64, len: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = vec![0u8; len as usize];
    for chunk in out.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

/// What a guest operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `data(seed, len)`.
    Write { seed: u64 },
    /// Zeros.
    Zeroes { unmap: bool },
    /// Advisory: the range may read as anything it held or zeros (or the backing file).
    Discard,
    /// A flush (offset and len 0).
    Flush,
}

/// One guest operation and when it ran.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub kind: Kind,
    pub offset: u64,
    pub len: u64,
    /// Logical clock at submission and completion (one counter for all operations).
    pub sub: u64,
    pub done: u64,
    /// Recording seq at submission (no device event of this op has a lower one) and at
    /// completion (every device event it caused has a lower one).
    pub sub_seq: Seq,
    pub done_seq: Seq,
}

/// How much work.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub seed: u64,
    pub ops: usize,
    pub workers: usize,
    /// Percent of operations that are flushes.
    pub flush_percent: u64,
    /// The virtual disk size.
    pub size: u64,
}

/// Runs `params.ops` operations on `io`, then a flush, and returns them in completion order.
pub fn run(io: &Backend<'_, '_>, seq: &dyn Fn() -> Seq, params: Params) -> Result<Vec<Op>, String> {
    let clock = Cell::new(0u64);
    let tick = || {
        let t = clock.get();
        clock.set(t + 1);
        t
    };
    let issued = Cell::new(0usize);
    let busy: RefCell<Vec<(u64, u64)>> = RefCell::new(Vec::new());
    let log: RefCell<Vec<Op>> = RefCell::new(Vec::new());
    let worker = |w: usize| {
        let (tick, issued, busy, log) = (&tick, &issued, &busy, &log);
        async move {
            let mut rng = Rng::new(params.seed.wrapping_mul(31).wrapping_add(w as u64));
            while issued.get() < params.ops {
                issued.set(issued.get() + 1);
                let (kind, offset, len) = pick(&mut rng, params, &busy.borrow());
                let range = (offset, offset + len);
                busy.borrow_mut().push(range);
                let (sub, sub_seq) = (tick(), seq());
                let result = match kind {
                    Kind::Write { seed } => io.write(offset, &data(seed, len)).await,
                    Kind::Zeroes { unmap } => io.write_zeroes(offset, len, unmap).await,
                    Kind::Discard => io.discard(offset, len).await,
                    Kind::Flush => io.flush().await,
                };
                let (done, done_seq) = (tick(), seq());
                busy.borrow_mut().retain(|r| *r != range);
                result.map_err(|e| format!("{kind:?} at {offset} len {len}: {e}"))?;
                log.borrow_mut().push(Op { kind, offset, len, sub, done, sub_seq, done_seq });
                // Give the others a turn now and then so submissions interleave.
                if rng.below(4) == 0 {
                    YieldNow(false).await;
                }
            }
            Ok::<(), String>(())
        }
    };
    let mut futures: Vec<Worker<'_>> = (0..params.workers).map(|w| Box::pin(worker(w)) as Worker<'_>).collect();
    join_all(&mut futures)?;
    drop(futures);
    // A last flush, so the end of the run is a cut where everything must be there.
    let (sub, sub_seq) = (tick(), seq());
    join_all(&mut [Box::pin(async { io.flush().await.map_err(|e| format!("final flush: {e}")) }) as Worker<'_>])?;
    let (done, done_seq) = (tick(), seq());
    log.borrow_mut().push(Op { kind: Kind::Flush, offset: 0, len: 0, sub, done, sub_seq, done_seq });
    let mut ops = log.take();
    ops.sort_by_key(|o| o.done);
    Ok(ops)
}

fn pick(rng: &mut Rng, p: Params, busy: &[(u64, u64)]) -> (Kind, u64, u64) {
    if rng.below(100) < p.flush_percent {
        return (Kind::Flush, 0, 0);
    }
    for _ in 0..64 {
        let roll = rng.below(100);
        // Sizes spread over 512 B .. 256 KiB, smaller ones more often.
        let shift = 9 + rng.below(10);
        let mut len = (1u64 << shift).min(256 << 10);
        let unaligned = roll < 20;
        if unaligned {
            len = 1 + rng.below(len);
        }
        let max = p.size - len;
        let mut offset = rng.below(max + 1);
        if !unaligned {
            offset &= !511;
        }
        let kind = match roll {
            0..=79 => Kind::Write { seed: rng.next_u64() },
            80..=89 => Kind::Zeroes { unmap: rng.below(2) == 0 },
            _ => Kind::Discard,
        };
        if !busy.iter().any(|&(s, e)| offset < e && s < offset + len) {
            return (kind, offset, len);
        }
    }
    (Kind::Flush, 0, 0)
}

/// One worker's future.
type Worker<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// Returns `Pending` once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls every future round-robin until all are done (devices are polled, so a no-op waker
/// does); the first error wins.
fn join_all(futures: &mut [Worker<'_>]) -> Result<(), String> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = vec![false; futures.len()];
    while done.iter().any(|d| !d) {
        for (f, d) in futures.iter_mut().zip(done.iter_mut()) {
            if !*d {
                if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
                    r?;
                    *d = true;
                }
            }
        }
    }
    Ok(())
}
