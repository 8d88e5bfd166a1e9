//! `--plot FILE.svg`: `img bench` on a raw image and a guest `bench` booted through the CLI
//! each write a well-formed SVG with both charts (latency histogram, IOPS over time), and the
//! guest's series (its `bench_latency` and `bench_series` records, decoded into the result's
//! `bench_series`) account for every request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::Path;

use qemu_runner::plot::xml_check;
use strata_tests::*;

const MIB: u64 = 1024 * 1024;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The SVG at `path`, checked well-formed with both charts; python3's XML parser agrees when
/// python3 is installed.
fn read_plot(path: &Path) -> String {
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let outline = xml_check::check(&doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(outline.root, "svg");
    assert!(
        doc.contains("<g id=\"latency\" class=\"plot\">"),
        "no latency chart"
    );
    assert!(
        doc.contains("<g id=\"iops\" class=\"plot\">"),
        "no IOPS chart"
    );
    assert!(
        outline.count("rect") > 1 && outline.count("circle") > 0,
        "charts without data"
    );
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(path)
        .output();
    if let Ok(out) = python {
        assert!(
            out.status.success(),
            "python3 rejects {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    doc
}

#[test]
fn img_bench_plots_a_raw_image() {
    let dir = scratch("plot-img");
    let disk = dir.join("b.img");
    raw_disk(&disk, 16 * MIB);
    let svg = dir.join("bench.svg");
    let status = qemu_runner::img::main(&args(&[
        "bench",
        "-q",
        "-f",
        "raw",
        "-c",
        "5000",
        "-d",
        "8",
        "--plot",
        svg.to_str().unwrap(),
        disk.to_str().unwrap(),
    ]));
    assert_eq!(status, 0);
    let doc = read_plot(&svg);
    assert!(doc.contains("Latency histogram: 5000 requests"), "{doc}");
    assert!(doc.contains("depth 8, 5000 requests"), "{doc}");
    // A plot that cannot be written fails the command.
    let status = qemu_runner::img::main(&args(&[
        "bench",
        "-q",
        "-f",
        "raw",
        "-c",
        "10",
        "--plot",
        dir.join("no/such/dir.svg").to_str().unwrap(),
        disk.to_str().unwrap(),
    ]));
    assert_eq!(status, 1);
}

#[test]
fn guest_bench_plots_through_the_cli() {
    let dir = scratch("plot-guest");
    let svg = dir.join("guest.svg");
    ensure_qemu();
    let cmd = "bench null0 --rw randread --bs 4k --qd 16 --count 20000";
    let status = qemu_runner::cli::main(&args(&[
        "boot",
        "--drive",
        "driver=null-co,size=1G,serial=null0",
        "--cmd",
        cmd,
        "--accel",
        "tcg",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]));
    assert_eq!(status, 0);
    let doc = read_plot(&svg);
    assert!(
        doc.contains("bench null0 --rw randread --bs 4096 --qd 16"),
        "{doc}"
    );
    assert!(doc.contains("Latency histogram: 20000 requests"), "{doc}");

    // The same run through the library: the records and the decoded series.
    let r = boot(
        Machine::Microvm,
        vec![Drive::null_co(1024 * MIB, "null0")],
        cmd,
    );
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let series = r.bench_series.as_ref().expect("bench_series decoded");
    let hist: u64 = series.latency_histogram.iter().map(|b| b.count).sum();
    let over_time: u64 = series.iops_series.counts.iter().sum();
    assert_eq!((hist, over_time), (20000, 20000));
    assert!(series
        .latency_histogram
        .windows(2)
        .all(|w| w[0].hi_ns == w[1].lo_ns && w[0].lo_ns < w[0].hi_ns));
    let n = series.iops_series.counts.len();
    assert!((1..=64).contains(&n), "{n} intervals");
    assert!(records(&r, "bench_latency")
        .iter()
        .all(|l| l["count"].as_array().is_some_and(|a| a.len() <= 16)));
    assert_eq!(records(&r, "bench_series").len(), 1);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["bench_series"]["iops_series"]["counts"]
            .as_array()
            .map(Vec::len),
        Some(n)
    );
    assert!(json["bench_series"]["latency_histogram"][0]["count"].is_u64());

    // --plot needs the bench workload: a usage error before anything boots.
    let status = qemu_runner::cli::main(&args(&[
        "boot",
        "--cmd",
        "devices",
        "--plot",
        svg.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(status, 2);
}
