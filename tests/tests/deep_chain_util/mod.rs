//! A deep qcow2 backing chain made fast with `qemu-img` and `qemu-io`, for the host and guest
//! deep-chain tests.

use std::path::Path;

use super::util::{create, drop_backing_format, qimg, qio_out, KIB};

/// c0.qcow2 <- c1.qcow2 <- ... <- cN.qcow2, small (2 MiB, 4 KiB clusters), each layer with a
/// pattern of its own in a cluster of its own (so a read of the top falls through to every
/// layer, down to the bottom, and `map` shows every depth), every seventh with a zeroed cluster
/// elsewhere, every third without a backing format (probed), every 50th smaller than its backing
/// file (1.5 MiB: what lies past its end reads as zeros). Fast: a layer is made and written alone
/// and linked with `rebase -u` (no open of the chain below it), except every 16th, which has
/// 64 KiB clusters and is written by qemu-io through its whole chain (copy-on-write of the
/// layers below into its cluster).
pub fn deep_chain(dir: &Path, n: usize) {
    for i in 0..=n {
        let f = dir.join(format!("c{i}.qcow2"));
        let size = if i % 50 == 49 { 1536 * KIB } else { 2048 * KIB };
        let through_chain = i > 0 && i % 16 == 8;
        create(
            &f,
            if through_chain { "" } else { "cluster_size=4k" },
            &size.to_string(),
            &[],
        );
        let at = (i as u64 * 4 * KIB) % (size - 4 * KIB) + (i as u64 % 4) * 512;
        let mut cmds = vec![format!("write -P {} {at} 2k", i % 251 + 1)];
        if i % 7 == 6 {
            cmds.push(format!(
                "write -z {} 4k",
                (i as u64 * 4 * KIB + 1024 * KIB) % (size - 4 * KIB)
            ));
        }
        if !through_chain {
            qio_out("qcow2", &f, &cmds);
        }
        if i > 0 {
            let below = format!("c{}.qcow2", i - 1);
            qimg(&[
                "rebase",
                "-u",
                "-b",
                &below,
                "-F",
                "qcow2",
                f.to_str().unwrap(),
            ]);
            if i % 3 == 0 {
                drop_backing_format(&f);
            }
        }
        if through_chain {
            qio_out("qcow2", &f, &cmds);
        }
    }
}
