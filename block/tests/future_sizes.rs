//! The size of a request's future is what a polled executor keeps per request in flight (the
//! kernel holds up to 64 of them on its stack): block-layer async functions must not carry big
//! buffers across awaits. This prints the sizes and fails if one grows past a budget.

#![allow(clippy::unwrap_used)] // reason: tests


use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::{Backend, BackendOptions, Graph};

/// Bytes a request future may take. A request's future is also copied whole wherever it is
/// passed by value (into a wrapper `async fn`, say), once per request: 8 KiB keeps that in view.
const BUDGET: usize = 8 * 1024;

#[test]
fn request_futures_stay_small() {
    let mut mem = vec![0u8; 1 << 20];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 64, 64> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d", &disk).unwrap();
    let backend = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let mut buf = [0u8; 512];
    let sizes = [
        ("read", core::mem::size_of_val(&backend.read(0, &mut buf))),
        ("write", core::mem::size_of_val(&backend.write(0, &[0u8; 512]))),
        ("write_zeroes", core::mem::size_of_val(&backend.write_zeroes(0, 512, false))),
        ("discard", core::mem::size_of_val(&backend.discard(0, 512))),
        ("flush", core::mem::size_of_val(&backend.flush())),
        ("resize", core::mem::size_of_val(&backend.resize(1 << 20))),
    ];
    for (name, size) in sizes {
        println!("Backend::{name} future: {size} bytes");
    }
    for (name, size) in sizes {
        assert!(size <= BUDGET, "Backend::{name} future is {size} bytes (budget {BUDGET})");
    }
}
