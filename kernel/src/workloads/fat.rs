//! `fat OPTIONS --file NAME [--write NAME]`: a FAT16/32 file system on the node (an MBR
//! disk, its first partition) through a no-heap FAT crate (`embedded-sdmmc`): lists the root
//! directory, prints the SHA-256 of the file `NAME` and, with `--write`, writes a file back
//! (one line: `sha256 HEX NAME`) through the node — into the top of a qcow2 chain, say.
//!
//! The FAT crate is synchronous (512-byte blocks): its reads and writes run through
//! `strata_block::backend::sdmmc` and `backend::blocking`, which polls the request and, while
//! it waits, the devices (the executor's loop is not running: this workload is the only user
//! of the graph, called at the top, so no other request holds what it waits for).

use core::ops::ControlFlow;

use embedded_sdmmc::{Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager};
use sha2::{Digest, Sha256};
use strata_block::backend::blocking::Blocking;
use strata_block::backend::sdmmc::SdmmcDevice;
use strata_block::BackendOptions;

use crate::devices::Catalog;
use crate::executor::{self, Platform};
use crate::report::Record;
use crate::stack::{self, KBackend};
use crate::{exit_code, println};

/// No wall clock in the guest: files are stamped 2026-01-01 00:00.
struct FixedTime;

impl TimeSource for FixedTime {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp { year_since_1970: 56, zero_indexed_month: 0, zero_indexed_day: 0, hours: 0, minutes: 0, seconds: 0 }
    }
}

/// Runs the workload (see the module docs).
#[inline(never)]
pub fn run(catalog: &Catalog, maps: &crate::cmdline::Maps<'_>, options: &str, file: &str, write: Option<&str>) -> u32 {
    let Some(mut graph) = stack::graph() else { return exit_code::FAILURE };
    let opened = if write.is_some() { stack::open(&mut graph, catalog, maps, options) } else { stack::open_read_only(&mut graph, catalog, maps, options) };
    let (node, _leaves) = match opened {
        Ok(v) => v,
        Err(code) => return code,
    };
    let opts = BackendOptions { read_only: write.is_none(), clock: stack::clock_ns, ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(e) => return stack::fail("fat", options, e),
    };
    let platform = stack::Io::new(&graph, catalog);
    let pump = || {
        platform.poll_devices();
    };
    let code = match files(&backend, Blocking::new(&pump), file, write) {
        Ok(()) => exit_code::SUCCESS,
        Err(e) => {
            println!("strata: fat: {}", e);
            Record::new("error").str("kind", "fat").str("node", options).str("message", e).emit();
            exit_code::FAILURE
        }
    };
    match executor::block_on(backend.close(), &platform) {
        Some(Ok(())) => code,
        Some(Err(e)) => stack::fail("fat", options, e),
        None => exit_code::FAILURE,
    }
}

/// An error of the FAT crate, as text.
type Message = heapless::String<96>;

fn message(what: &str, e: impl core::fmt::Debug) -> Message {
    let mut m = Message::new();
    let _ = core::fmt::write(&mut m, format_args!("{what}: {e:?}"));
    m
}

/// The file-system part: list, hash, write back.
fn files(backend: &KBackend<'_>, wait: Blocking<'_>, file: &str, write: Option<&str>) -> Result<(), Message> {
    let volumes: VolumeManager<_, _, 2, 2, 1> = VolumeManager::new_with_limits(SdmmcDevice::new(backend, wait), FixedTime, 0);
    let volume = volumes.open_volume(VolumeIdx(0)).map_err(|e| message("open volume 0", e))?;
    let root = volume.open_root_dir().map_err(|e| message("open root directory", e))?;
    let mut entries = 0u64;
    root.iterate_dir(|e| {
        println!("fat: {:>10} {}{}", e.size, e.name, if e.attributes.is_directory() { "/" } else { "" });
        Record::new("fat_entry").str("name", e.name).num("size", u64::from(e.size)).bool("dir", e.attributes.is_directory()).emit();
        entries += 1;
        ControlFlow::Continue(())
    })
    .map_err(|e| message("list root directory", e))?;
    let f = root.open_file_in_dir(file, Mode::ReadOnly).map_err(|e| message("open file", e))?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 4096];
    let mut bytes = 0u64;
    while !f.is_eof() {
        let n = f.read(&mut buf).map_err(|e| message("read file", e))?;
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    f.close().map_err(|e| message("close file", e))?;
    let mut hex = heapless::String::<64>::new();
    for b in hasher.finalize() {
        let _ = core::fmt::write(&mut hex, format_args!("{:02x}", b));
    }
    println!("{}  {}", hex, file);
    Record::new("fat").str("file", file).num("bytes", bytes).num("entries", entries).str("digest", hex.as_str()).emit();
    if let Some(name) = write {
        let out = root.open_file_in_dir(name, Mode::ReadWriteCreateOrTruncate).map_err(|e| message("create file", e))?;
        let mut line = heapless::String::<128>::new();
        let _ = core::fmt::write(&mut line, format_args!("sha256 {} {}\n", hex, file));
        out.write(line.as_bytes()).map_err(|e| message("write file", e))?;
        out.close().map_err(|e| message("close written file", e))?;
        println!("fat: wrote {} ({} bytes)", name, line.len());
        Record::new("fat_write").str("file", name).num("bytes", line.len() as u64).emit();
    }
    root.close().map_err(|e| message("close root directory", e))?;
    volume.close().map_err(|e| message("close volume", e))?;
    Ok(())
}
