//! `create SERIAL --size N [...]`: formats a device as an empty qcow2 image, as
//! `qemu-img create -f qcow2` would lay it out (`strata_block::driver::qcow2::create`).
//!
//! The device is opened raw (`driver=raw,file=SERIAL`, never probed, so an old image on it
//! does not matter); an options word with `=` must describe a raw window of a device, which
//! then holds the image. The image must fit the device: virtio disks do not grow.

use core::fmt::Write;

use strata_block::driver::qcow2::create::{create, CreateOptions, Layout};
use strata_block::Error;
use strata_boot::clock;

use crate::cmdline::{CreateArgs, Maps};
use crate::devices::Catalog;
use crate::report::Record;
use crate::stack;
use crate::{executor, exit_code, println};

/// Writes the image and reports it.
pub fn run(catalog: &Catalog, maps: &Maps<'_>, args: &CreateArgs<'_>) -> u32 {
    let Some(mut graph) = stack::graph() else { return exit_code::FAILURE };
    let mut text = heapless::String::<256>::new();
    let options = if args.options.contains('=') {
        args.options
    } else {
        if write!(text, "driver=raw,file={}", args.options).is_err() {
            return stack::fail("create", args.options, Error::BadOption { key: "file", why: "name too long" });
        }
        text.as_str()
    };
    let opts = match options_for(args) {
        Ok(o) => o,
        Err(e) => return stack::fail("create", args.options, e),
    };
    let (node, _leaves) = match stack::open(&mut graph, catalog, maps, options) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if graph.node(node).map(|n| n.driver) != Ok("raw") {
        return stack::fail("create", options, Error::BadOption { key: "driver", why: "create writes onto a device or a raw window of one (driver=raw)" });
    }
    let started = clock::now();
    let platform = stack::Io::new(&graph, catalog);
    match executor::block_on(create(&graph.io(), node, &opts), &platform) {
        Some(Ok(())) => {}
        Some(Err(e)) => return stack::fail("create", options, e),
        None => return exit_code::FAILURE,
    }
    let us = clock::ticks_to_ns(clock::now().wrapping_sub(started)) / 1000;
    let file_size = Layout::new(&opts).map_or(0, |l| l.file_size);
    println!(
        "create: {}: qcow2, {} bytes, cluster_size={} extended_l2={} lazy_refcounts={} refcount_bits={}, {} bytes of metadata",
        options,
        opts.size,
        args.cluster_size,
        on_off(opts.extended_l2),
        on_off(opts.lazy_refcounts),
        args.refcount_bits,
        file_size
    );
    let mut record = Record::new("create")
        .str("node", options)
        .num("size", opts.size)
        .num("cluster_size", args.cluster_size)
        .bool("extended_l2", opts.extended_l2)
        .bool("lazy_refcounts", opts.lazy_refcounts)
        .num("refcount_bits", args.refcount_bits)
        .num("file_size", file_size)
        .num("us", us);
    if let Some(b) = opts.backing {
        record = record.str("backing", b);
    }
    if let Some(f) = opts.backing_fmt {
        record = record.str("backing_fmt", f);
    }
    record.emit();
    exit_code::SUCCESS
}

/// The block layer's options for the command line's.
fn options_for<'a>(args: &CreateArgs<'a>) -> Result<CreateOptions<'a>, Error> {
    if !args.cluster_size.is_power_of_two() {
        return Err(Error::BadOption { key: "cluster_size", why: "cluster size must be a power of two between 512 and 2048k" });
    }
    if !args.refcount_bits.is_power_of_two() || args.refcount_bits > 64 {
        return Err(Error::BadOption { key: "refcount_bits", why: "refcount width must be a power of two and may not exceed 64 bits" });
    }
    let opts = CreateOptions {
        size: args.size,
        cluster_bits: args.cluster_size.trailing_zeros(),
        extended_l2: args.extended_l2,
        lazy_refcounts: args.lazy_refcounts,
        refcount_order: args.refcount_bits.trailing_zeros(),
        backing: args.backing,
        backing_fmt: args.backing_fmt,
        ..CreateOptions::new(args.size)
    };
    Layout::new(&opts)?;
    Ok(opts)
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
