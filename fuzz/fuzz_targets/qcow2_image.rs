//! A whole qcow2 image from arbitrary bytes on a RAM disk: opened (header, extensions, snapshot
//! table), read (L1/L2 tables, refcounts, compressed clusters through the inflater), written
//! (allocation, copy-on-write, refcount updates) and closed. Nothing may panic or hang; every
//! failure is a typed error. The first byte picks what is exercised, the rest is the image.
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::BlockDevice;
use strata_block::io::cache::{CacheSlot, Inflater};
use strata_block::{Backend, BackendOptions, Graph};

/// Bytes read or written per request, and the most read in all (keeps each run short).
const CHUNK: usize = 64 * 1024;
const READ_BUDGET: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, image)) = data.split_first() else { return };
    // Room to grow for the write mode, whole sectors.
    let mut memory = image.to_vec();
    memory.resize(image.len().next_multiple_of(512) + if mode & 1 == 1 { 1 << 20 } else { 0 }, 0);
    let disk = RamDisk::<8>::new(&mut memory, 512, RamConfig::default());
    let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let inflaters = [Inflater::new()];
    let mut bounce = vec![0u8; 8 * CHUNK];
    let mut graph: Graph<'_, 8, 32> = Graph::new(&mut bounce, CHUNK);
    graph.set_metadata_cache(&slots);
    graph.set_decompressors(&inflaters);
    let read_only = mode & 1 == 0;
    let text = if read_only { "driver=qcow2,read-only=on,file=disk" } else { "driver=qcow2,file=disk" };
    let mut resolve = |name: &str| (name == "disk").then_some(&disk as &dyn BlockDevice);
    let Ok(root) = block_on(graph.open(text, &mut resolve)) else { return };
    let Ok(backend) = Backend::new(&graph, root, BackendOptions { read_only, ..BackendOptions::default() }) else { return };
    let size = backend.size();
    let mut buf = vec![0u8; CHUNK];
    let step = (size / 16).max(CHUNK as u64);
    let mut at = 0;
    let mut read = 0;
    while at < size && read < READ_BUDGET {
        let n = (size - at).min(CHUNK as u64);
        let _ = block_on(backend.read(at, &mut buf[..n as usize]));
        read += n;
        at = at.saturating_add(step);
    }
    if !read_only && size > 0 {
        let seed = u64::from(mode);
        for i in 0..4u64 {
            let off = (seed.wrapping_mul(0x9e37_79b9).wrapping_add(i * 0x1_2345)) % size;
            let len = (size - off).min(4096 + i * 7000) as usize;
            buf[..len].fill(mode);
            let _ = block_on(backend.write(off, &buf[..len]));
        }
        let _ = block_on(backend.write_zeroes(0, size.min(65536), mode & 2 != 0));
        let _ = block_on(backend.discard(size / 2, size.min(65536) / 2));
        let _ = block_on(backend.flush());
    }
    let _ = block_on(backend.close());
});
