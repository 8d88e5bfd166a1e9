//! What a random 4 KiB read or write costs the block layer, without a device's noise: the guest
//! bench's workload (`bench --rw randread|randwrite --bs 4k --qd 32`: 32 tasks, the same
//! xorshift offsets) on a
//! RAM disk whose requests complete [`DELAY`] executor rounds after their submission, driven as
//! the kernel's executor drives them (a round polls the tasks woken since the last; a request
//! wakes its task when it completes), so the instruction count under
//! `valgrind --tool=callgrind` repeats exactly. The kernel's graph sizes (64 tracked requests,
//! 1 MiB metadata cache, 64 KiB bounce buffers) and its `zeroed_from` (the file reads zeros
//! past the image, as the runner's headroom promises).
//!
//! `cargo run --release -p strata-block --features std --example io_cost -- IMAGE FORMAT
//! read|write COUNT [PREFILL]`: IMAGE is a file made by `qemu-img create` (read into RAM with
//! 512 MiB of room after it), FORMAT `raw` or `qcow2`, optionally with more of the node's
//! options (`qcow2,read-only=on`, as the guest bench opens its read cases; the RAM disk is then
//! read-only too, as a `read-only=on` drive is to the guest); PREFILL writes
//! (other offsets) run first, e.g. to measure overwrites of allocated clusters. Instructions per request: the difference of
//! two runs with different COUNT, divided by the difference.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{BlockDevice, DeviceError, DeviceInfo, DeviceRequest, SubmitError, Ticket};
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Graph};

/// Requests in flight.
const QD: usize = 32;
/// Request size.
const BS: usize = 4096;

/// Executor rounds a request stays in flight.
const DELAY: u64 = 8;

/// A RAM disk that completes a request [`DELAY`] rounds after its submission and wakes its
/// task then, and says where it reads zeros from (as the guest's headroom disk does).
struct Zeroed<'m> {
    ram: RamDisk<'m, 64>,
    /// The RAM disk's, read-only for the read-only cases (as the guest bench's drives are).
    info: DeviceInfo,
    zeroed_from: u64,
    round: Cell<u64>,
    /// Requests wait for their round (in [`run`]; the open and the close do not tick).
    pacing: Cell<bool>,
    /// Per ticket: the round it was submitted in, and the waker of a pending poll.
    flight: RefCell<HashMap<u32, (u64, Option<Waker>)>>,
}

impl Zeroed<'_> {
    /// Starts the next round: wakes the tasks whose requests are due.
    fn tick(&self) {
        let round = self.round.get() + 1;
        self.round.set(round);
        for (submitted, waker) in self.flight.borrow_mut().values_mut() {
            if round - *submitted >= DELAY {
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
        }
    }
}

#[allow(unsafe_code)] // reason: forwards the device contract unchanged
impl BlockDevice for Zeroed<'_> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        // SAFETY: the caller's guarantees are passed on as they are.
        let ticket = unsafe { self.ram.submit(req) }?;
        self.flight.borrow_mut().insert(ticket.0, (self.round.get(), None));
        Ok(ticket)
    }
    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        let mut flight = self.flight.borrow_mut();
        match flight.get_mut(&ticket.0) {
            Some((submitted, waker)) if self.pacing.get() && self.round.get() - *submitted < DELAY => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => {
                flight.remove(&ticket.0);
                drop(flight);
                self.ram.poll(ticket, cx)
            }
        }
    }
    fn zeroed_from(&self) -> Option<u64> {
        Some(self.zeroed_from)
    }
}

/// A task's ready flag.
struct Ready(AtomicBool);
impl Wake for Ready {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `count` requests (writes of `mem`, or reads if `read`) from `QD` tasks seeded with
/// `seed`: each round polls the tasks woken.
fn run(dev: &Zeroed<'_>, backend: &Backend<'_, '_>, mem: &[u8], read: bool, count: u64, seed: u64) {
    let slots = backend.size() / BS as u64;
    let issued = std::cell::Cell::new(0u64);
    let mut tasks: Vec<Pin<Box<dyn std::future::Future<Output = ()> + '_>>> = (0..QD)
        .map(|i| {
            let (issued, buf) = (&issued, &mem[i * BS..(i + 1) * BS]);
            Box::pin(async move {
                let mut into = [0u8; BS];
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((i as u64 + 1) << 32) ^ seed;
                while issued.get() < count {
                    issued.set(issued.get() + 1);
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let offset = rng % slots * BS as u64;
                    let done = if read { backend.read(offset, &mut into).await } else { backend.write(offset, buf).await };
                    done.unwrap_or_else(|e| panic!("request at {offset}: {e}"));
                }
            }) as Pin<Box<dyn std::future::Future<Output = ()>>>
        })
        .collect();
    let flags: Vec<Arc<Ready>> = (0..QD).map(|_| Arc::new(Ready(AtomicBool::new(true)))).collect();
    let wakers: Vec<Waker> = flags.iter().map(|f| Waker::from(f.clone())).collect();
    let mut done = [false; QD];
    dev.pacing.set(true);
    while done.iter().any(|d| !d) {
        for ((t, d), (f, w)) in tasks.iter_mut().zip(done.iter_mut()).zip(flags.iter().zip(&wakers)) {
            if !*d && f.0.swap(false, Ordering::Relaxed) && t.as_mut().poll(&mut Context::from_waker(w)).is_ready() {
                *d = true;
            }
        }
        dev.tick();
    }
    dev.pacing.set(false);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, format, op, count, rest @ ..] = args.as_slice() else {
        eprintln!("usage: io_cost IMAGE raw|qcow2 read|write COUNT [PREFILL]");
        std::process::exit(2);
    };
    let read = match op.as_str() {
        "read" => true,
        "write" => false,
        _ => panic!("read or write, not {op}"),
    };
    let count: u64 = count.parse().unwrap_or_else(|e| panic!("COUNT: {e}"));
    let prefill: u64 = rest.first().map_or(0, |p| p.parse().unwrap_or_else(|e| panic!("PREFILL: {e}")));
    let mut memory = std::fs::read(image).unwrap_or_else(|e| panic!("{image}: {e}"));
    let len = memory.len() as u64;
    memory.resize(memory.len() + (512 << 20), 0);
    let config = RamConfig::default();
    let read_only = format.contains("read-only=on");
    let ram = RamDisk::new(&mut memory, 512, config);
    let info = DeviceInfo { read_only, ..ram.info().clone() };
    let dev = Zeroed { ram, info, zeroed_from: len, round: Cell::new(0), pacing: Cell::new(false), flight: RefCell::new(HashMap::new()) };
    let mut bounce = vec![0u8; 256 * 1024];
    let cache: Vec<CacheSlot> = (0..256).map(|_| CacheSlot::new()).collect();
    let mut graph: Graph<'_, 8, 64> = Graph::new(&mut bounce, 64 * 1024);
    graph.set_metadata_cache(&cache);
    let options = format!("driver={format},file=f");
    let mut resolve = |name: &str| (name == "f").then_some(&dev as &dyn BlockDevice);
    let root = futures::executor::block_on(graph.open(&options, &mut resolve)).unwrap_or_else(|e| panic!("open: {e}"));
    let backend = Backend::new(&graph, root, BackendOptions { read_only, ..BackendOptions::default() }).unwrap_or_else(|e| panic!("backend: {e}"));
    let mem: Vec<u8> = (0..QD * BS).map(|i| (i as u8) ^ 0x5a).collect();
    if prefill > 0 {
        run(&dev, &backend, &mem, false, prefill, 7);
    }
    run(&dev, &backend, &mem, read, count, 1);
    let submitted = dev.ram.stats().submitted;
    futures::executor::block_on(backend.close()).unwrap_or_else(|e| panic!("close: {e}"));
    println!("{format}: {count} {op}s after {prefill} writes: {submitted} device requests before the close");
}
