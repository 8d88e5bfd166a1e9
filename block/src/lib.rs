//! Strata's block layer: portable, `#![no_std]`, and without a heap.
//!
//! # Embedding it
//!
//! A firmware gives the block layer a leaf device (its own [`dev::BlockDevice`]: `info`,
//! `submit`, `poll`), some memory, and something that polls futures; then it opens images by
//! an options string, in QEMU's `-blockdev` style, and reads and writes through a [`Backend`]:
//!
//! ```no_run
//! use strata_block::dev::BlockDevice;
//! use strata_block::io::cache::CacheSlot;
//! use strata_block::{Backend, BackendOptions, Graph};
//!
//! /// `top` holds a qcow2 overlay whose backing file is named `base.raw`; `base` holds that.
//! async fn demo(top: &dyn BlockDevice, base: &dyn BlockDevice) -> strata_block::Result<()> {
//!     let mut bounce = [0u8; 4 * 4096]; // bounce buffers, 4 KiB each
//!     let cache = [const { CacheSlot::new() }; 8]; // qcow2 metadata cache, 4 KiB slices
//!     let mut graph: Graph<'_, 8, 16> = Graph::new(&mut bounce, 4096);
//!     graph.set_metadata_cache(&cache);
//!     let mut resolve = |name: &str| match name {
//!         "top" => Some(top),
//!         "base.raw" => Some(base), // the backing file name stored in the overlay
//!         _ => None,
//!     };
//!     let root = graph.open("driver=qcow2,file=top", &mut resolve).await?;
//!     let disk = Backend::new(&graph, root, BackendOptions::default())?;
//!     let mut sector = [0u8; 512];
//!     disk.read(0, &mut sector).await?; // from the backing file
//!     disk.write(512, &[0x5a; 1024]).await?; // copy-on-write into the overlay
//!     disk.close().await // write caches back, flush, mark the image clean
//! }
//! ```
//!
//! The whole example — a RAM disk as the device, the memory in `.bss`, a ten-line `block_on`,
//! built for x86_64, aarch64 and riscv64 bare metal and run by a test over images made by
//! `qemu-img` — is the `examples/embed` crate of the repository. Feature `embedded-io` adds
//! `Read + Write + Seek` streams over a backend (`backend::stream`) and a device over any
//! such stream (`dev::stream`); `embedded-sdmmc` a backend as that crate's 512-byte block
//! device, for its FAT file system (`backend::sdmmc`).
//!
//! # Features
//!
//! Default: everything (`write`, `compress`, `cmd`, and the filters `blkdebug`, `blkverify`,
//! `throttle`, `copy-on-read`). A firmware that only boots from raw or qcow2 images links
//! `default-features = false`: chains open with `read-only=on` and read (a read-write open, or a
//! writing [`Backend`], fails with [`driver::NO_WRITE`]; a compressed cluster reads as
//! `Error::Unsupported`); about 128 KiB of text on x86_64 (`scripts/footprint.sh`).
//!
//! Everything here builds for bare-metal targets with no `alloc` crate and no global allocator.
//! Capacities are fixed at build or init time; running out is an error, never a panic.
//! `docs/ARCHITECTURE.md` in the repository describes the layers, the data path, the crash
//! rules and the resources.
//!
//! Layers, bottom to top (a module imports only from its own layer or below; the
//! `architecture` test enforces it): `options`, `clock`, `dev`, `codec` → `error` → `node` → `io` (the
//! lower half: what drivers may use) → `driver` → `path` (the walk and the write executor) →
//! `graph` (owns nodes, states and pools; opens chains) → `backend` → `cmd`.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
// Unsafe code only where memory is handed to devices (`dev`, and the io layer's request guard);
// each such module opts in with `#![allow(unsafe_code)]` and a reason.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod clock;
#[cfg(feature = "cmd")]
pub mod cmd;
pub mod codec;
pub mod dev;
pub mod driver;
pub mod error;
pub mod graph;
pub mod io;
pub mod node;
pub mod options;
pub mod path;

pub use backend::{Backend, BackendOptions, DetectZeroes, Drained};
pub use error::{Error, Result};
pub use graph::{Graph, NodeId};
