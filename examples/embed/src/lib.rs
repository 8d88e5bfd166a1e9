//! Embedding Strata in firmware: everything a board writes to read and write a qcow2 chain.
//!
//! Three pieces of glue, all in this crate:
//! 1. a leaf device — [`disk::SliceDisk`], a RAM disk that finishes requests as they are
//!    submitted (a real board wraps its SD card, flash or virtio queue the same way);
//! 2. the memory the block layer needs, given by the caller ([`Memory`]: bounce buffers and
//!    the metadata cache; no heap anywhere);
//! 3. an executor — [`block_on`], a loop that polls one future with a no-op waker (enough for
//!    devices that make progress when polled; see `kernel/src/executor.rs` for many requests
//!    in flight at once).
//!
//! [`run`] opens `driver=qcow2,file=top` with its backing file found by name, reads through
//! the chain, writes into the overlay (copy-on-write from the backing file), flushes and reads
//! back. It is generic over the devices, so the host test (`tests/chain.rs`) runs it on images
//! made by `qemu-img` and checks the result with `qemu-img check` and `compare`, and
//! `src/bin/firmware.rs` links it for x86_64, aarch64 and riscv64 bare metal.
//!
//! [`run_read_only`] is what a firmware that only boots from images needs: it opens the same
//! chain read-only and hashes the guest disk. Built with `--no-default-features --features
//! firmware,read-only`, the firmware links strata-block without its `write`, `compress`,
//! `cmd` and filter features (`scripts/footprint.sh` prints what each build costs).

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod disk;

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use strata_block::dev::BlockDevice;
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Error, Graph};

/// Bytes of one bounce buffer (unaligned edges, copy-on-write pieces).
pub const BOUNCE: usize = 4096;

/// What the block layer borrows for the graph's lifetime: caller-owned, fixed-size.
pub struct Memory<const B: usize, const S: usize> {
    /// Bounce buffers, `B / BOUNCE` of them.
    pub bounce: [u8; B],
    /// Metadata cache: `S` slices of 4 KiB (qcow2 L1, L2 and refcount tables).
    pub cache: [CacheSlot; S],
}

impl<const B: usize, const S: usize> Memory<B, S> {
    /// Zeroed memory (a `const fn`, so it can be a `static` in `.bss`).
    pub const fn new() -> Self {
        Self { bounce: [0; B], cache: [const { CacheSlot::new() }; S] }
    }
}

impl<const B: usize, const S: usize> Default for Memory<B, S> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `future` to completion by polling it in a loop (the devices move when polled).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// What [`run`] saw: the chain's size and the first bytes of the guest disk before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Size of the top image in bytes.
    pub size: u64,
    /// Guest bytes 0..16 as opened (from the backing file where the overlay has nothing).
    pub before: [u8; 16],
    /// The same bytes after [`run`] wrote [`PATTERN`] at [`WRITE_AT`].
    pub after: [u8; 16],
}

/// Where [`run`] writes: 512 bytes into the guest disk, so the overlay must copy the rest of
/// the cluster from the backing file.
pub const WRITE_AT: u64 = 512;
/// What [`run`] writes there.
pub const PATTERN: [u8; 1024] = [0x5a; 1024];

/// Opens the qcow2 image on `top` with its backing file `backing` (the name stored in the
/// overlay resolves to it), reads, writes [`PATTERN`] at [`WRITE_AT`], flushes and reads back.
pub fn run<const B: usize, const S: usize>(top: &dyn BlockDevice, backing: &dyn BlockDevice, backing_name: &str, memory: &mut Memory<B, S>) -> Result<Seen, Error> {
    let mut graph: Graph<'_, 8, 16> = Graph::new(&mut memory.bounce, BOUNCE);
    graph.set_metadata_cache(&memory.cache);
    let mut resolve = |name: &str| match name {
        "top" => Some(top),
        n if n == backing_name => Some(backing),
        _ => None,
    };
    let root = block_on(graph.open("driver=qcow2,file=top", &mut resolve))?;
    let disk = Backend::new(&graph, root, BackendOptions::default())?;
    let (mut before, mut after) = ([0; 16], [0; 16]);
    block_on(async {
        disk.read(0, &mut before).await?;
        disk.write(WRITE_AT, &PATTERN).await?;
        disk.flush().await?;
        #[cfg(not(feature = "stream"))]
        disk.read(WRITE_AT - 8, &mut after).await?;
        Ok::<(), Error>(())
    })?;
    #[cfg(feature = "stream")]
    {
        use embedded_io::{Read, Seek, SeekFrom};
        let pump = || {};
        let mut stream = strata_block::backend::stream::BlockingStream::new(&disk, strata_block::backend::blocking::Blocking::new(&pump));
        stream.seek(SeekFrom::Start(WRITE_AT - 8)).map_err(|e| e.0)?;
        stream.read_exact(&mut after).map_err(|e| match e {
            embedded_io::ReadExactError::Other(e) => e.0,
            embedded_io::ReadExactError::UnexpectedEof => Error::OutOfRange { offset: WRITE_AT - 8, len: 16, size: disk.size() },
        })?;
    }
    let size = disk.size();
    block_on(disk.close())?;
    Ok(Seen { size, before, after })
}

/// What [`run_read_only`] saw: the chain's size and a hash of every guest byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashed {
    /// Size of the top image in bytes.
    pub size: u64,
    /// [`fnv1a`] of the whole guest disk, read through the chain.
    pub hash: u64,
}

/// FNV-1a (64-bit) of `bytes`, continuing from `hash` (start with [`FNV_START`]): small and
/// dependency-free, enough to compare a disk read through the chain with the host's copy.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a's offset basis.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Bytes [`run_read_only`] reads per request.
pub const READ_CHUNK: usize = 4096;

/// Opens the qcow2 image on `top` read-only, with its backing file `backing` (the name stored
/// in the overlay resolves to it), and hashes the guest disk. Nothing is written to either
/// device; a read-only graph has nothing to write back, so it is dropped without a close.
pub fn run_read_only<const B: usize, const S: usize>(top: &dyn BlockDevice, backing: &dyn BlockDevice, backing_name: &str, memory: &mut Memory<B, S>) -> Result<Hashed, Error> {
    let mut graph: Graph<'_, 8, 16> = Graph::new(&mut memory.bounce, BOUNCE);
    graph.set_metadata_cache(&memory.cache);
    let mut resolve = |name: &str| match name {
        "top" => Some(top),
        n if n == backing_name => Some(backing),
        _ => None,
    };
    let root = block_on(graph.open("driver=qcow2,file=top,read-only=on", &mut resolve))?;
    let disk = Backend::new(&graph, root, BackendOptions { read_only: true, ..BackendOptions::default() })?;
    let size = disk.size();
    let mut buf = [0; READ_CHUNK];
    let mut hash = FNV_START;
    let mut at = 0;
    while at < size {
        let n = (size - at).min(READ_CHUNK as u64) as usize;
        block_on(disk.read(at, &mut buf[..n]))?;
        hash = fnv1a(hash, &buf[..n]);
        at += n as u64;
    }
    Ok(Hashed { size, hash })
}
