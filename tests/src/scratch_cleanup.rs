//! Removing the scratch directories of tests that passed when the test process exits.
//!
//! libtest names each test's thread after the test and has no teardown hook, so: every
//! [`super::scratch`] directory is registered with the name of the thread that made it, a panic
//! hook records the names of threads that panicked, and an `atexit` handler (run both when the
//! harness returns and when it calls `process::exit(101)` after a failure) removes the
//! directories whose thread never panicked. A test run on the main thread (`--test-threads=1`)
//! shares one name, so one failure there keeps every directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Registered directories and the thread that made each.
static DIRS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
/// Threads that panicked.
static FAILED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("unnamed").to_string()
}

/// Records `dir` as made by the current thread's test.
pub fn register(dir: &Path) {
    if let Ok(mut dirs) = DIRS.lock() {
        dirs.push((thread_name(), dir.to_path_buf()));
    }
}

/// Installs the panic hook (chained before the current one) and the exit handler, once per
/// process (the caller guards it with a `Once`).
pub fn install() {
    if std::env::var_os("STRATA_KEEP_SCRATCH").is_some_and(|v| v != "0") {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut failed) = FAILED.lock() {
            failed.push(thread_name());
        }
        previous(info);
    }));
    extern "C" {
        fn atexit(f: extern "C" fn()) -> i32;
    }
    // SAFETY: `atexit` from the C library the Rust runtime already links; `remove_passed` is an
    // `extern "C" fn()` that never unwinds (it only locks, compares and removes directories,
    // ignoring every error).
    unsafe {
        atexit(remove_passed);
    }
}

/// The exit handler: removes each registered directory whose test thread never panicked.
extern "C" fn remove_passed() {
    let (Ok(dirs), Ok(failed)) = (DIRS.lock(), FAILED.lock()) else { return };
    for (thread, dir) in dirs.iter() {
        if !failed.contains(thread) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
