//! The `throttle` filter and its groups on a hand-moved clock over `null-co` nodes: QEMU's
//! leaky-bucket schedule (average, the tenth-of-a-second slack, bursts), a group's members
//! served in turn, flushes never held, a drain letting held requests go, and the refusals.
//! The same options against QEMU itself, in real time, are in `tests/tests/throttle.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::cell::Cell;
use std::pin::pin;
use std::task::Poll;

use common::poll_once;
use futures::executor::block_on;
use futures::future::join_all;
use strata_block::clock::ManualClock;
use strata_block::io::throttle::parse_object;
use strata_block::{Backend, BackendOptions, Error, Graph};

type G<'d> = Graph<'d, 8, 32>;

fn open(graph: &mut G<'_>, text: &str) -> strata_block::Result<strata_block::NodeId> {
    block_on(graph.open(text, &mut |_| None))
}

fn graph_with<'d>(clock: &'d ManualClock, object: &str) -> G<'d> {
    let mut graph: G<'d> = Graph::new(&mut [], 4096);
    graph.set_clock(clock);
    graph.add_throttle_group(parse_object(object).unwrap()).unwrap();
    graph
}

const NODE: &str = "driver=throttle,throttle-group=tg,file.driver=null-co,file.size=1M,file.read-zeroes=on";

/// Runs `workers` readers on each backend until the clock reads `until_ns`, moving the clock
/// 100 µs each time nothing can go on; returns the reads each backend completed.
fn saturate(clock: &ManualClock, backends: &[&Backend<'_, '_>], workers: usize, until_ns: u64, len: usize) -> Vec<u64> {
    let counts: Vec<Cell<u64>> = backends.iter().map(|_| Cell::new(0)).collect();
    let jobs = backends.iter().zip(&counts).flat_map(|(be, count)| {
        (0..workers).map(move |_| async move {
            let mut buf = vec![0u8; len];
            while clock.now_ns() < until_ns {
                be.read(0, &mut buf).await.unwrap();
                // Reads let go after the end (the ones in flight then) do not count.
                if clock.now_ns() < until_ns {
                    count.set(count.get() + 1);
                }
            }
        })
    });
    let mut all = pin!(join_all(jobs));
    while poll_once(all.as_mut()).is_pending() {
        clock.advance(100_000);
    }
    counts.iter().map(Cell::get).collect()
}

use strata_block::clock::Clock;

#[test]
fn iops_follow_qemus_bucket() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=100");
    let root = open(&mut graph, NODE).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    // A tenth of a second's worth at once (plus the one that fills it), then 100 per second.
    let n = saturate(&clock, &[&be], 8, 2_000_000_000, 4096)[0];
    assert!((208..=214).contains(&n), "{n} reads in 2 s at 100 IOPS");
}

#[test]
fn bps_and_iops_size_count_bytes_and_big_requests() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.bps-read=1048576");
    let root = open(&mut graph, NODE).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let n = saturate(&clock, &[&be], 4, 1_000_000_000, 65536)[0];
    assert!((17..=19).contains(&n), "{n} 64 KiB reads in 1 s at 1 MiB/s");

    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=100,limits.iops-size=4096");
    let root = open(&mut graph, NODE).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let n = saturate(&clock, &[&be], 4, 1_000_000_000, 16384)[0];
    assert!((26..=29).contains(&n), "{n} 16 KiB reads count as four operations each");
}

#[test]
fn bursts_run_at_max_for_max_length_then_fall_to_the_average() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=100,limits.iops-total-max=1000,limits.iops-total-max-length=2");
    let root = open(&mut graph, NODE).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let first = saturate(&clock, &[&be], 8, 1_000_000_000, 4096)[0];
    assert!((1000..=1110).contains(&first), "{first} in the first second of a burst at 1000/s");
    let second = saturate(&clock, &[&be], 8, 2_000_000_000, 4096)[0];
    assert!((850..=1010).contains(&second), "{second} in the second second (the bucket holds 2000)");
    // The bucket (level 100 + 900 t) fills at 2.11 s: 110 more at the burst rate, then 100/s.
    let later = saturate(&clock, &[&be], 8, 5_000_000_000, 4096)[0];
    assert!((385..=405).contains(&later), "{later} in the next 3 s, mostly at the average");
}

#[test]
fn a_group_is_shared_and_its_members_take_turns() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=200");
    let a = open(&mut graph, NODE).unwrap();
    let b = open(&mut graph, NODE).unwrap();
    let (be_a, be_b) = (Backend::new(&graph, a, BackendOptions::default()).unwrap(), Backend::new(&graph, b, BackendOptions::default()).unwrap());
    // Member a asks with 16 requests at a time, b with 2: each still gets half.
    let counts = {
        let jobs_a = saturate_async(&clock, &be_a, 16, 2_000_000_000);
        let jobs_b = saturate_async(&clock, &be_b, 2, 2_000_000_000);
        let mut both = pin!(futures::future::join(jobs_a, jobs_b));
        loop {
            if let Poll::Ready(c) = poll_once(both.as_mut()) {
                break c;
            }
            clock.advance(100_000);
        }
    };
    let total = counts.0 + counts.1;
    assert!((418..=424).contains(&total), "{counts:?}: the group's limit is the total");
    // The first tenth of a second's slack (21 requests) goes to whoever asks first, as in
    // QEMU (a request that finds nobody waiting goes at once); after that the two alternate.
    assert!(counts.0.abs_diff(counts.1) <= 21 + 2, "{counts:?}: round-robin between members");
}

async fn saturate_async(clock: &ManualClock, be: &Backend<'_, '_>, workers: usize, until_ns: u64) -> u64 {
    let count = Cell::new(0u64);
    join_all((0..workers).map(|_| async {
        let mut buf = [0u8; 4096];
        while clock.now_ns() < until_ns {
            be.read(0, &mut buf).await.unwrap();
            if clock.now_ns() < until_ns {
                count.set(count.get() + 1);
            }
        }
    }))
    .await;
    count.get()
}

#[test]
fn flushes_pass_and_a_drain_releases_held_requests() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=10");
    let root = open(&mut graph, NODE).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut buf = [0u8; 512];
    // 10 / 10 = 1 at once, plus the one that fills the bucket.
    block_on(be.read(0, &mut buf)).unwrap();
    block_on(be.write(0, &buf)).unwrap();
    let mut held = pin!(be.read(0, &mut buf));
    assert!(poll_once(held.as_mut()).is_pending(), "the bucket is full");
    assert!(block_on(be.flush()).is_ok(), "flushes are not throttled");
    let mut drain = pin!(be.drain());
    assert!(poll_once(drain.as_mut()).is_pending(), "the held read is in flight");
    assert!(matches!(poll_once(held.as_mut()), Poll::Ready(Ok(()))), "the drain lets it go without the clock moving");
    assert!(poll_once(drain.as_mut()).is_ready());
}

#[test]
fn a_cancelled_request_does_not_block_the_ones_behind_it() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=10");
    let root = open(&mut graph, NODE).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let (mut b1, mut b2) = ([0u8; 512], [0u8; 512]);
    block_on(be.read(0, &mut b1)).unwrap();
    block_on(be.read(0, &mut b1)).unwrap();
    let mut second = Box::pin(be.read(0, &mut b2));
    {
        let mut first = pin!(be.read(0, &mut b1));
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
    } // `first` dropped while held
    clock.advance(1_000_000_000);
    assert!(matches!(poll_once(second.as_mut()), Poll::Ready(Ok(()))));
}

#[test]
fn nodes_and_groups_are_checked() {
    let clock = ManualClock::default();
    let mut graph = graph_with(&clock, "throttle-group,id=tg,limits.iops-total=100");
    let r = open(&mut graph, "driver=throttle,throttle-group=nope,file.driver=null-co");
    assert!(matches!(r, Err(Error::BadOption { key: "throttle-group", .. })), "{r:?}");
    let r = open(&mut graph, "driver=throttle,file.driver=null-co");
    assert!(matches!(r, Err(Error::BadOption { key: "throttle-group", .. })), "{r:?}");
    assert!(graph.add_throttle_group(parse_object("throttle-group,id=tg").unwrap()).is_err(), "one group per name");
    assert!(parse_object("throttle-group,id=x,limits.iops-total=1,limits.iops-read=1").is_err());
    assert!(parse_object("memory-backend-ram,id=x").is_err());
    assert!(parse_object("throttle-group,limits.iops-total=1").is_err());
    let mut no_clock: G<'_> = Graph::new(&mut [], 4096);
    no_clock.add_throttle_group(parse_object("throttle-group,id=tg").unwrap()).unwrap();
    let r = open(&mut no_clock, NODE);
    assert!(matches!(r, Err(Error::BadOption { .. })), "no clock: {r:?}");
}
