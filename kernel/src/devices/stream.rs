//! The kernel's polled I/O path for this stage: a sequential stream over one device with a few
//! requests in flight, built on virtio-drivers' non-blocking calls.
//!
//! virtio-drivers' `VirtIOBlk` has a 16-descriptor queue and each request takes three descriptors
//! (header, data, status), so at most five can be queued; we keep [`DEPTH`] in flight. Requests
//! complete in whatever order the device chooses; data is handed to the caller in offset order.
//! Every wait is bounded by [`DEVICE_TIMEOUT_S`], so a dead device is an error, not a hang.
//! (The block layer's own virtio request layer at real queue depth replaces this later.)

use spin::Mutex;
use strata_boot::arch::tsc;
use virtio_drivers::device::blk::{BlkReq, BlkResp};

use super::{note_first_io, Disk, SECTOR};

/// Requests in flight.
pub const DEPTH: usize = 4;
/// Bytes per request.
pub const CHUNK: usize = 64 * 1024;
/// A device that completes nothing for this long is declared dead.
pub const DEVICE_TIMEOUT_S: u64 = 30;
/// Request latencies kept for percentiles (the first ones; enough for the workloads here).
pub const MAX_SAMPLES: usize = 16 * 1024;

/// Direction of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// Device to memory; the callback sees each chunk after it arrives.
    Read,
    /// Memory to device; the callback fills each chunk before it is sent.
    Write,
}

/// Why a stream stopped.
#[derive(Debug)]
pub enum StreamError {
    /// The range is not sector-aligned or runs past the device's end.
    OutOfRange,
    /// The device or driver reported an error.
    Device(virtio_drivers::Error),
    /// Nothing completed within [`DEVICE_TIMEOUT_S`].
    Timeout,
}

impl core::fmt::Display for StreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfRange => write!(f, "range not sector-aligned or past the end of the device"),
            Self::Device(e) => write!(f, "device error: {:?}", e),
            Self::Timeout => write!(f, "device completed nothing for {} s", DEVICE_TIMEOUT_S),
        }
    }
}

/// What a stream measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamStats {
    /// Requests completed.
    pub requests: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time in nanoseconds.
    pub ns: u64,
    /// Median request latency in nanoseconds.
    pub p50_ns: u64,
    /// 99th-percentile request latency in nanoseconds.
    pub p99_ns: u64,
    /// Slowest request in nanoseconds.
    pub max_ns: u64,
}

impl StreamStats {
    /// Throughput in bytes per second.
    pub fn bytes_per_sec(&self) -> u64 {
        ((u128::from(self.bytes) * 1_000_000_000) / u128::from(self.ns.max(1))) as u64
    }
}

#[repr(C, align(4096))]
struct Buffer([u8; CHUNK]);

/// Book-keeping of one request slot.
#[derive(Clone, Copy)]
struct SlotState {
    /// Queue token while in flight.
    token: Option<u16>,
    /// Completed, waiting to be handed over in offset order.
    done: bool,
    len: usize,
    submitted_at: u64,
}

const IDLE: SlotState = SlotState { token: None, done: false, len: 0, submitted_at: 0 };

/// Everything a request hands to the device lives here, in a static, so that abandoning a request
/// (device timeout) can never let the device write into reused memory.
struct Engine {
    headers: Option<([BlkReq; DEPTH], [BlkResp; DEPTH])>,
    state: [SlotState; DEPTH],
    /// Set when a request was abandoned in flight: its slot is the device's forever.
    poisoned: bool,
}

/// The data buffers and latency samples: all-zero statics, so they cost no image bytes (.bss).
struct Space {
    bufs: [Buffer; DEPTH],
    samples: [u64; MAX_SAMPLES],
}

static ENGINE: Mutex<Engine> = Mutex::new(Engine { headers: None, state: [IDLE; DEPTH], poisoned: false });
static SPACE: Mutex<Space> =
    Mutex::new(Space { bufs: [const { Buffer([0; CHUNK]) }; DEPTH], samples: [0; MAX_SAMPLES] });

/// Moves `len` bytes at byte `offset` of `disk` in `dir`, calling `each(offset, chunk)` for every
/// chunk in offset order (after a read arrives, before a write is sent).
pub fn stream(
    disk: &mut Disk,
    dir: Dir,
    offset: u64,
    len: u64,
    mut each: impl FnMut(u64, &mut [u8]),
) -> Result<StreamStats, StreamError> {
    let end = offset.checked_add(len).ok_or(StreamError::OutOfRange)?;
    if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) || end > disk.capacity() {
        return Err(StreamError::OutOfRange);
    }
    let mut guard = ENGINE.lock();
    let engine = &mut *guard;
    if engine.poisoned {
        return Err(StreamError::Timeout);
    }
    engine.state = [IDLE; DEPTH];
    let (reqs, resps) = engine.headers.get_or_insert_with(|| {
        (core::array::from_fn(|_| BlkReq::default()), core::array::from_fn(|_| BlkResp::default()))
    });
    let state = &mut engine.state;
    let mut space = SPACE.lock();
    let Space { bufs, samples } = &mut *space;

    let timeout = tsc::hz().saturating_mul(DEVICE_TIMEOUT_S);
    let started = tsc::rdtsc();
    let (mut submitted, mut handed, mut requests, mut nsamples) = (0u64, 0u64, 0u64, 0usize);
    let (mut next_submit, mut next_hand) = (0usize, 0usize);
    let mut failure = None;

    loop {
        // Fill idle slots in round-robin order, so completions can be handed over in order.
        while submitted < len && failure.is_none() && state[next_submit].token.is_none() && !state[next_submit].done {
            let i = next_submit;
            let n = (len - submitted).min(CHUNK as u64) as usize;
            let pos = offset + submitted;
            let sector = (pos / SECTOR) as usize;
            let buf = &mut bufs[i].0[..n];
            if dir == Dir::Write {
                each(pos, buf);
            }
            state[i].len = n;
            state[i].submitted_at = tsc::rdtsc();
            // SAFETY: reqs[i], bufs[i] and resps[i] live in a static and are not touched again
            // until this token completes (or never, if the device times out: `poisoned`).
            let token = unsafe {
                match dir {
                    Dir::Read => disk.blk.read_blocks_nb(sector, &mut reqs[i], buf, &mut resps[i]),
                    Dir::Write => disk.blk.write_blocks_nb(sector, &mut reqs[i], buf, &mut resps[i]),
                }
            };
            match token {
                Ok(t) => state[i].token = Some(t),
                Err(e) => failure = Some(StreamError::Device(e)),
            }
            submitted += n as u64;
            next_submit = (next_submit + 1) % DEPTH;
        }
        if state.iter().all(|s| s.token.is_none()) {
            break;
        }

        // Wait, bounded, for the device's next completion.
        let wait_start = tsc::rdtsc();
        let token = loop {
            if let Some(t) = disk.blk.peek_used() {
                break t;
            }
            if tsc::rdtsc().wrapping_sub(wait_start) > timeout {
                engine.poisoned = true;
                return Err(StreamError::Timeout);
            }
            core::hint::spin_loop();
        };
        let now = tsc::rdtsc();
        let Some(i) = state.iter().position(|s| s.token == Some(token)) else {
            engine.poisoned = true;
            return Err(StreamError::Device(virtio_drivers::Error::WrongToken));
        };
        let buf = &mut bufs[i].0[..state[i].len];
        // SAFETY: the same req/buf/resp that were submitted with this token.
        let status = unsafe {
            match dir {
                Dir::Read => disk.blk.complete_read_blocks(token, &reqs[i], buf, &mut resps[i]),
                Dir::Write => disk.blk.complete_write_blocks(token, &reqs[i], buf, &mut resps[i]),
            }
        };
        state[i].token = None;
        state[i].done = true;
        note_first_io();
        requests += 1;
        if let Some(sample) = samples.get_mut(nsamples) {
            *sample = now.wrapping_sub(state[i].submitted_at);
            nsamples += 1;
        }
        if let Err(e) = status {
            failure.get_or_insert(StreamError::Device(e));
        }

        // Hand finished chunks over in offset order.
        while state[next_hand].done {
            let i = next_hand;
            state[i].done = false;
            if failure.is_none() && dir == Dir::Read {
                each(offset + handed, &mut bufs[i].0[..state[i].len]);
            }
            handed += state[i].len as u64;
            next_hand = (next_hand + 1) % DEPTH;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let ns = tsc::ticks_to_ns(tsc::rdtsc().wrapping_sub(started));
    let latencies = &mut samples[..nsamples];
    latencies.sort_unstable();
    let pick = |p: usize| {
        let i = latencies.len().saturating_sub(1) * p / 100;
        tsc::ticks_to_ns(latencies.get(i).copied().unwrap_or(0))
    };
    Ok(StreamStats { requests, bytes: handed, ns, p50_ns: pick(50), p99_ns: pick(99), max_ns: pick(100) })
}
