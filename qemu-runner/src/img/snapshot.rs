//! `img snapshot`: qemu-img's internal snapshot command on qcow2 images — list (`-l`, the
//! default), create (`-c`), apply (`-a`), delete (`-d`) — with qemu-img's table, messages and
//! exit statuses. The work is the block layer's (`Qcow2::snapshot_create` and friends).

use strata_block::driver::qcow2::snapshots::{Lookup, NewSnapshot, SnapshotInfo, MAX_NAME};
use strata_block::driver::qcow2::Qcow2;
use strata_block::node::Role;

use super::args::Args;
use super::image::{self, block_on, Image, OpenOptions};
use super::human::human_size;
use super::ImgError;

/// What to do.
enum Action {
    List,
    Create(String),
    Apply(String),
    Delete(String),
}

/// Runs `img snapshot [-f FMT] [-U] [-q] [--image-opts] -l|-c NAME|-a NAME|-d NAME FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    run_to(argv, &mut std::io::stdout())
}

/// [`run`], printing the list to `out`.
pub fn run_to(argv: &[String], out: &mut dyn std::io::Write) -> Result<(), ImgError> {
    let args = Args::parse(
        argv,
        &["-f", "-c", "-a", "-d"],
        &["-l", "-U", "--force-share", "-q", "--image-opts"],
    )?;
    let file = &args.exactly(1, "FILE")?[0];
    let mut actions = Vec::new();
    if args.has("-l") {
        actions.push(Action::List);
    }
    for (flag, make) in [
        ("-c", Action::Create as fn(String) -> Action),
        ("-a", Action::Apply),
        ("-d", Action::Delete),
    ] {
        if let Some(v) = args.value(flag) {
            actions.push(make(v.to_string()));
        }
    }
    if actions.len() > 1 {
        return Err(ImgError::failed("Cannot mix '-l', '-a', '-c', '-d'".into()));
    }
    let action = actions.pop().unwrap_or(Action::List);
    let force_share = args.has("-U") || args.has("--force-share");
    let read_only = matches!(action, Action::List);
    if force_share && !read_only {
        return Err(ImgError::failed(format!(
            "Could not open '{file}': force-share=on can only be used with read-only images"
        )));
    }
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only,
        force_share,
        no_backing: true,
        ..args.image_options()?
    };
    image::with_image(file, &opts, |img| match &action {
        Action::List => {
            let list = list(img)?;
            if !list.is_empty() {
                out.write_all(format_list(&list, local_date).as_bytes())
                    .map_err(|e| ImgError::failed(format!("stdout: {e}")))?;
            }
            Ok(())
        }
        Action::Create(name) => with_qcow2(
            img,
            format!("Could not create snapshot '{name}': Operation not supported"),
            |q, io, node| {
                // qemu-img keeps 255 bytes of a name (`QEMUSnapshotInfo::name`).
                let cut = (0..=name.len().min(MAX_NAME))
                    .rev()
                    .find(|&i| name.is_char_boundary(i))
                    .unwrap_or(0);
                let kept = &name[..cut];
                let (date_sec, date_nsec) = now();
                let new = NewSnapshot {
                    id: None,
                    name: kept,
                    date_sec,
                    date_nsec,
                    vm_clock_nsec: 0,
                    icount: 0,
                };
                block_on(q.snapshot_create(io, node, &new))
                    .map(|_| ())
                    .map_err(|e| {
                        ImgError::failed(format!(
                            "Could not create snapshot '{name}': {}",
                            reason(&e)
                        ))
                    })
            },
        ),
        Action::Apply(name) => with_qcow2(
            img,
            format!("Could not apply snapshot '{name}': Block driver does not support snapshots"),
            |q, io, node| {
                block_on(q.snapshot_apply(io, node, name)).map(|_| ()).map_err(|e| match e {
                strata_block::Error::NotFound => {
                    ImgError::failed(format!("Could not apply snapshot '{name}': Failed to load snapshot: No such file or directory"))
                }
                e => ImgError::failed(format!("Could not apply snapshot '{name}': {}", reason(&e))),
            })
            },
        ),
        Action::Delete(name) => with_qcow2(
            img,
            format!("Could not delete snapshot '{name}': snapshot not found"),
            |q, io, node| {
                block_on(q.snapshot_delete(io, node, name, Lookup::Name))
                    .map(|_| ())
                    .map_err(|e| match e {
                        strata_block::Error::NotFound => ImgError::failed(format!(
                            "Could not delete snapshot '{name}': snapshot not found"
                        )),
                        e => ImgError::failed(format!(
                            "Could not delete snapshot '{name}': {}",
                            reason(&e)
                        )),
                    })
            },
        ),
    })
}

/// qemu-img's wording where QEMU says the same thing (`strerror`), else Strata's error.
fn reason(e: &strata_block::Error) -> String {
    use strata_block::Error;
    match e {
        // A second reference that the refcount width cannot hold (QEMU: -EINVAL).
        Error::Unsupported(w) if w.starts_with("refcount overflow") => {
            format!("Invalid argument ({e})")
        }
        Error::Unsupported(_) => format!("Operation not supported ({e})"),
        // QEMU's -EFBIG for a full snapshot table.
        Error::NoSpace { what } if what.starts_with("snapshot table") => {
            format!("File too large ({e})")
        }
        Error::ReadOnly => "Permission denied".into(),
        _ => e.to_string(),
    }
}

/// Runs `f` on the image's qcow2 root, drained; formats without internal snapshots fail with
/// `unsupported` (qemu-img's message for the action).
fn with_qcow2(
    img: &Image<'_, '_>,
    unsupported: String,
    f: impl FnOnce(&Qcow2, &strata_block::io::Io<'_, '_>, strata_block::NodeId) -> Result<(), ImgError>,
) -> Result<(), ImgError> {
    let graph = img.backend.graph();
    let root = img.root();
    let state = graph
        .state(root)
        .map_err(|e| ImgError::failed(e.to_string()))?;
    let Some(q) = state.and_then(|s| s.qcow2()) else {
        return Err(ImgError::failed(unsupported));
    };
    let _drained = block_on(img.backend.drain());
    f(q, &graph.io(), root)
}

/// The snapshots of the image (none for formats without them).
fn list(img: &Image<'_, '_>) -> Result<Vec<SnapshotInfo>, ImgError> {
    let graph = img.backend.graph();
    let root = img.root();
    let state = graph
        .state(root)
        .map_err(|e| ImgError::failed(e.to_string()))?;
    let Some(q) = state.and_then(|s| s.qcow2()) else {
        return Ok(Vec::new());
    };
    let node = graph
        .node(root)
        .map_err(|e| ImgError::failed(e.to_string()))?;
    let file = node
        .child(Role::File)
        .ok_or_else(|| ImgError::failed("qcow2 node without a file".into()))?;
    let mut walk = q.snapshots();
    let mut out = Vec::new();
    while let Some(s) = block_on(walk.next(&graph.io(), file))
        .map_err(|e| ImgError::failed(format!("Could not read the snapshot table: {e}")))?
    {
        out.push(s);
    }
    Ok(out)
}

/// qemu-img's "Snapshot list:" table (`bdrv_snapshot_dump`), dates through `date`: what
/// `img snapshot -l` and the human `img info` print.
pub fn format_list(list: &[SnapshotInfo], date: fn(u32) -> String) -> String {
    let mut out = String::from("Snapshot list:\n");
    out.push_str(&format!(
        "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
        "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT"
    ));
    for s in list {
        let secs = s.vm_clock_nsec / 1_000_000_000;
        let clock = format!(
            "{:04}:{:02}:{:02}.{:03}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            s.vm_clock_nsec / 1_000_000 % 1000
        );
        let icount = s.icount.map_or(String::new(), |c| (c as i64).to_string());
        out.push_str(&format!(
            "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
            s.id.as_str(),
            s.name.as_str(),
            human_size(s.vm_state_size),
            date(s.date_sec),
            clock,
            icount
        ));
    }
    out
}

/// `%Y-%m-%d %H:%M:%S` in local time, as qemu-img prints dates.
pub fn local_date(secs: u32) -> String {
    let t = libc::time_t::from(secs);
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return format!("@{secs}");
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Wall-clock time now: seconds and nanoseconds (to the microsecond, as qemu-img takes it).
fn now() -> (u32, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as u32, d.subsec_micros() * 1000)
}
