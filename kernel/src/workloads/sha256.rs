//! `sha256 OPTIONS`: the SHA-256 of what the opened node shows (`sha256 disk0` hashes the
//! device's raw bytes; `sha256 driver=raw,offset=1M,size=4M,file=disk0` a window of them).
//! The node is opened read-only (`read-only=on` at every format level).
//!
//! [`READERS`] tasks read chunks round-robin (task `i` reads chunks `i`, `i + READERS`, ...) and
//! feed the hash in offset order, so while one task hashes, the others' reads are in flight.

use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::Poll;

use sha2::{Digest, Sha256};
use strata_block::backend::OpKind;
use strata_block::{BackendOptions, Error};
use strata_boot::clock;

use super::{data, per_sec, MbPerSec, Micros};
use crate::devices::Catalog;
use crate::executor;
use crate::report::Record;
use crate::stack::{self, KBackend};
use crate::{exit_code, println};

/// Reading tasks.
const READERS: usize = 8;
/// Bytes per read.
const CHUNK: usize = 256 * 1024;

/// Hashes the node described by `options` and prints the hex digest.
///
/// Not inlined: each workload's request futures get their own frame, not a share of the
/// dispatcher's.
#[inline(never)]
pub fn run(catalog: &Catalog, maps: &crate::cmdline::Maps<'_>, options: &str) -> u32 {
    let (Some(mut graph), Some(buf)) = (stack::graph(), data()) else { return exit_code::FAILURE };
    // Only reads: a read-only open never writes the image (nor refuses a dirty one).
    let (node, leaves) = match stack::open_read_only(&mut graph, catalog, maps, options) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let opts = BackendOptions { read_only: true, clock: stack::clock_ns, ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(e) => return stack::fail("sha256", options, e),
    };
    let size = backend.size();
    let started = clock::now();
    let hashed = Cell::new(0u64); // chunks hashed so far
    let hasher = RefCell::new(Sha256::new());
    let failed: Cell<Option<Error>> = Cell::new(None);
    let mut tasks: heapless::Vec<_, READERS> = heapless::Vec::new();
    for (first, mem) in buf.chunks_mut(CHUNK).take(READERS).enumerate() {
        let (backend, hashed, hasher, failed) = (&backend, &hashed, &hasher, &failed);
        let _ = tasks.push(async move {
            let mut chunk = first as u64;
            loop {
                let offset = chunk * CHUNK as u64;
                if offset >= size || failed.get().is_some() {
                    return;
                }
                let len = (size - offset).min(CHUNK as u64) as usize;
                if let Err(e) = backend.read(offset, &mut mem[..len]).await {
                    failed.set(Some(e));
                    return;
                }
                // Our turn to hash comes when every earlier chunk is hashed.
                poll_fn(|cx| {
                    if hashed.get() == chunk || failed.get().is_some() {
                        Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                })
                .await;
                if failed.get().is_some() {
                    return;
                }
                hasher.borrow_mut().update(&mem[..len]);
                hashed.set(chunk + 1);
                chunk += READERS as u64;
            }
        });
    }
    let platform = stack::Io::new(&graph, catalog);
    executor::run(executor::as_slice(core::pin::pin!(tasks)), &platform);
    let ns = clock::ticks_to_ns(clock::now().wrapping_sub(started));
    if let Some(e) = failed.get() {
        return stack::fail("sha256", options, e);
    }
    let digest = hasher.into_inner().finalize();
    let mut hex = heapless::String::<64>::new();
    for b in digest {
        let _ = core::fmt::write(&mut hex, format_args!("{:02x}", b));
    }
    let reads = *backend.stats().kind(OpKind::Read);
    println!("{}  {}", hex, options);
    println!(
        "sha256: {} bytes in {} requests, {}, latency p50 <{} p99 <{}",
        size,
        reads.ops,
        MbPerSec(per_sec(size, ns)),
        Micros(reads.percentile_ns(500)),
        Micros(reads.percentile_ns(990))
    );
    let device = leaves.first().map_or("", |d| d.serial());
    Record::new("sha256").str("node", options).str("device", device).num("bytes", size).str("digest", hex.as_str()).num("us", ns / 1000).emit();
    exit_code::SUCCESS
}
