//! `boot --plot FILE.svg`: the page for a guest `bench` run, titled from its `bench` record
//! (node, mode, request size, queue depth) and the machine, with the series the runner decoded
//! ([`crate::BootResult::bench_series`]).

use std::path::Path;

use serde_json::Value;

use super::frame;
use crate::BootResult;

/// The page for `result`; `None` if it holds no bench series (no bench ran, or it failed).
pub fn page(result: &BootResult) -> Option<String> {
    let series = result.bench_series.as_ref()?;
    let empty = Value::Null;
    let bench = result.records_of("bench").last().unwrap_or(&empty);
    let text = |k: &str| {
        bench
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let number = |k: &str| bench.get(k).and_then(Value::as_u64).unwrap_or(0);
    let title = format!(
        "qemu-runner boot: bench {} --rw {} --bs {} --qd {}",
        text("node"),
        text("rw"),
        number("bs"),
        number("qd")
    );
    let subtitle = format!(
        "{} I/Os in {}: {} IOPS; latency p50 {}, p99 {}, p99.9 {}; {}, {}",
        number("ios"),
        frame::duration(number("ns") as f64),
        number("iops"),
        frame::duration(number("lat_p50_ns") as f64),
        frame::duration(number("lat_p99_ns") as f64),
        frame::duration(number("lat_p999_ns") as f64),
        result.accel,
        result.machine
    );
    Some(super::bench_svg(&title, &subtitle, series))
}

/// Writes [`page`] to `path`; the error is a sentence for the user.
pub fn write(result: &BootResult, path: &Path) -> Result<(), String> {
    let Some(svg) = page(result) else {
        return Err(format!(
            "--plot: no bench series in the guest's records (the workload ended with status {}); {} not written",
            result.status.as_str(),
            path.display()
        ));
    };
    std::fs::write(path, svg).map_err(|e| format!("--plot: cannot write {}: {e}", path.display()))
}
