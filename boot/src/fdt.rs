//! A flattened device tree (DTB) reader without a heap: the top-level nodes of a blob and their
//! properties, everything bounds-checked, so a malformed tree yields errors or fewer nodes, never
//! a panic or an endless loop.
//!
//! Enough for a board's discovery: `/chosen` `bootargs`, `/memory*` `reg`, `virtio,mmio` nodes'
//! `reg`, PCI host bridges' `reg` and `ranges`. Written for this project (no crate): the
//! structure block is walked token by token (FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP,
//! FDT_END, devicetree specification v0.4 chapter 5), keeping only the depth.

mod boot_facts;
pub use boot_facts::virtio_mmio_windows;
mod children;

/// The blob's magic number (big-endian at offset 0).
pub const MAGIC: u32 = 0xd00d_feed;

/// Largest blob accepted (QEMU's are 1 MiB at most).
pub const MAX_SIZE: usize = 4 << 20;

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// Why a blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// No magic number at the start.
    BadMagic(u32),
    /// A header field points outside the blob, or the blob is larger than [`MAX_SIZE`].
    BadHeader,
}

/// A parsed blob: its structure and strings blocks.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    /// The root's `#address-cells` (default 2).
    pub address_cells: u32,
    /// The root's `#size-cells` (default 1).
    pub size_cells: u32,
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// Reads a `cells`-cell big-endian number at `at`; none past the end or for more than 2 cells.
fn cells_at(bytes: &[u8], at: usize, cells: u32) -> Option<u64> {
    match cells {
        1 => be32(bytes, at).map(u64::from),
        2 => Some(u64::from(be32(bytes, at)?) << 32 | u64::from(be32(bytes, at + 4)?)),
        _ => None,
    }
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

/// The length of the blob that starts at `header` (its `totalsize`), for mapping it before
/// parsing; none without the magic number.
pub fn total_size(header: &[u8; 8]) -> Option<usize> {
    (be32(header, 0)? == MAGIC).then(|| be32(header, 4).map(|n| n as usize))?
}

impl<'a> Fdt<'a> {
    /// Checks the header of `blob` and finds its blocks.
    pub fn parse(blob: &'a [u8]) -> Result<Self, FdtError> {
        let magic = be32(blob, 0).ok_or(FdtError::BadHeader)?;
        if magic != MAGIC {
            return Err(FdtError::BadMagic(magic));
        }
        let field = |i: usize| {
            be32(blob, i * 4)
                .map(|v| v as usize)
                .ok_or(FdtError::BadHeader)
        };
        let total = field(1)?;
        if total > blob.len() || total > MAX_SIZE {
            return Err(FdtError::BadHeader);
        }
        let blob = &blob[..total];
        let block = |off: usize, size: usize| {
            blob.get(off..off.checked_add(size).ok_or(FdtError::BadHeader)?)
                .ok_or(FdtError::BadHeader)
        };
        // Header words: magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
        // last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct.
        let strings = block(field(3)?, field(8)?)?;
        let structs = block(field(2)?, field(9)?)?;
        let mut fdt = Fdt {
            structs,
            strings,
            address_cells: 2,
            size_cells: 1,
        };
        if let Some(root) = fdt.root() {
            if let Some(v) = root.prop("#address-cells").and_then(|v| be32(v, 0)) {
                fdt.address_cells = v;
            }
            if let Some(v) = root.prop("#size-cells").and_then(|v| be32(v, 0)) {
                fdt.size_cells = v;
            }
        }
        Ok(fdt)
    }

    /// The root node.
    pub fn root(&self) -> Option<Node<'a>> {
        let mut at = 0;
        loop {
            match be32(self.structs, at)? {
                NOP => at += 4,
                BEGIN_NODE => return self.node_at(at),
                _ => return None,
            }
        }
    }

    /// The node whose FDT_BEGIN_NODE token is at `at`.
    fn node_at(&self, at: usize) -> Option<Node<'a>> {
        let name_start = at + 4;
        let rest = self.structs.get(name_start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        let name = core::str::from_utf8(&rest[..len]).unwrap_or("");
        let props = align4(name_start + len + 1)?;
        Some(Node {
            fdt: *self,
            name,
            props,
        })
    }

    /// The root's children, in order.
    pub fn top_nodes(&self) -> TopNodes<'a> {
        TopNodes {
            fdt: *self,
            at: self.root().map_or(usize::MAX, |r| r.props),
            depth: 1,
        }
    }

    /// The top-level node called `name` (exactly, or `name@...`).
    pub fn top_node(&self, name: &str) -> Option<Node<'a>> {
        self.top_nodes().find(|n| n.base_name() == name)
    }

    fn string(&self, offset: usize) -> Option<&'a str> {
        let rest = self.strings.get(offset..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&rest[..len]).ok()
    }
}

/// One node: its name and, through [`Node::prop`], its own properties.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    /// The full name (`virtio_mmio@a000000`).
    pub name: &'a str,
    /// Offset of the first token after the name.
    props: usize,
}

impl<'a> Node<'a> {
    /// The name without its unit address.
    pub fn base_name(&self) -> &'a str {
        self.name.split('@').next().unwrap_or(self.name)
    }

    /// The node's properties as (name, value), up to its first child or its end.
    pub fn props(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let fdt = self.fdt;
        let mut at = self.props;
        core::iter::from_fn(move || loop {
            match be32(fdt.structs, at)? {
                NOP => at += 4,
                PROP => {
                    let len = be32(fdt.structs, at + 4)? as usize;
                    let name = fdt.string(be32(fdt.structs, at + 8)? as usize)?;
                    let start = at + 12;
                    let value = fdt.structs.get(start..start.checked_add(len)?)?;
                    at = align4(start + len)?;
                    return Some((name, value));
                }
                _ => return None,
            }
        })
    }

    /// The value of property `name`.
    pub fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.props().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// True if the `compatible` string list holds `what`.
    pub fn is_compatible(&self, what: &str) -> bool {
        self.prop("compatible")
            .is_some_and(|v| v.split(|&b| b == 0).any(|s| s == what.as_bytes()))
    }

    /// A string property, up to its NUL.
    pub fn str_prop(&self, name: &str) -> Option<&'a str> {
        let v = self.prop(name)?;
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        core::str::from_utf8(&v[..end]).ok()
    }

    /// The `(address, size)` pairs of `reg`, in the root's cell sizes (top-level nodes' parent).
    pub fn reg(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let (ac, sc) = (self.fdt.address_cells, self.fdt.size_cells);
        let value = self.prop("reg").unwrap_or(&[]);
        // In usize: a hostile `#address-cells` cannot overflow it (and reads nothing: more than
        // two cells are refused by `cells_at`).
        let step = (ac as usize + sc as usize) * 4;
        (0..value.len().checked_div(step).unwrap_or(0)).filter_map(move |i| {
            let at = i * step;
            Some((
                cells_at(value, at, ac)?,
                cells_at(value, at + ac as usize * 4, sc)?,
            ))
        })
    }
}

/// Iterator over the root's children.
pub struct TopNodes<'a> {
    fdt: Fdt<'a>,
    at: usize,
    /// Nesting depth at `at` (1: inside the root).
    depth: u32,
}

impl<'a> Iterator for TopNodes<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        // Every step moves `at` forward by at least 4, so the walk ends.
        loop {
            let token = be32(self.fdt.structs, self.at)?;
            match token {
                NOP => self.at += 4,
                PROP => {
                    let len = be32(self.fdt.structs, self.at + 4)? as usize;
                    self.at = align4(self.at.checked_add(12)?.checked_add(len)?)?;
                }
                BEGIN_NODE => {
                    let node = self.fdt.node_at(self.at)?;
                    self.at = node.props;
                    self.depth += 1;
                    if self.depth == 2 {
                        return Some(node);
                    }
                }
                END_NODE => {
                    self.at += 4;
                    self.depth = self.depth.checked_sub(1)?;
                    if self.depth == 0 {
                        return None;
                    }
                }
                END => return None,
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A blob with a root (`#address-cells` 2, `#size-cells` 2), `/chosen` with `bootargs`, a
    /// memory node and a `virtio,mmio` node with a child.
    fn blob() -> [u8; 512] {
        let strings: &[u8] =
            b"#address-cells\0#size-cells\0bootargs\0device_type\0reg\0compatible\0";
        let off = |name: &[u8]| strings.windows(name.len()).position(|w| w == name).unwrap() as u32;
        let mut s: [u32; 96] = [0; 96];
        let mut n = 0;
        let mut put = |words: &[u32]| {
            for &w in words {
                s[n] = w.to_be();
                n += 1;
            }
        };
        put(&[BEGIN_NODE, 0]); // root, empty name
        put(&[PROP, 4, off(b"#address-cells"), 2]);
        put(&[PROP, 4, off(b"#size-cells"), 2]);
        put(&[
            BEGIN_NODE,
            u32::from_be_bytes(*b"chos"),
            u32::from_be_bytes(*b"en\0\0"),
        ]);
        put(&[
            PROP,
            6,
            off(b"bootargs"),
            u32::from_be_bytes(*b"sha2"),
            u32::from_be_bytes(*b"56\0\0"),
        ]);
        put(&[END_NODE]);
        put(&[
            NOP,
            BEGIN_NODE,
            u32::from_be_bytes(*b"memo"),
            u32::from_be_bytes(*b"ry\0\0"),
        ]);
        put(&[
            PROP,
            7,
            off(b"device_type"),
            u32::from_be_bytes(*b"memo"),
            u32::from_be_bytes(*b"ry\0\0"),
        ]);
        put(&[PROP, 16, off(b"reg"), 0, 0x4000_0000, 0, 0x1000_0000]);
        put(&[END_NODE]);
        put(&[
            BEGIN_NODE,
            u32::from_be_bytes(*b"virt"),
            u32::from_be_bytes(*b"io@a"),
            0,
        ]);
        put(&[
            PROP,
            12,
            off(b"compatible"),
            u32::from_be_bytes(*b"virt"),
            u32::from_be_bytes(*b"io,m"),
            u32::from_be_bytes(*b"mio\0"),
        ]);
        put(&[PROP, 16, off(b"reg"), 0, 0x0a00_0000, 0, 0x200]);
        put(&[BEGIN_NODE, 0, PROP, 4, off(b"reg"), 7, END_NODE]); // a child: not a top node
        put(&[END_NODE, END_NODE, END]);
        let structs_len = n * 4;
        let mut b = [0u8; 512];
        let header = [
            MAGIC,
            512,
            40,
            (40 + structs_len) as u32,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            structs_len as u32,
        ];
        for (i, w) in header.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        for (i, w) in s[..n].iter().enumerate() {
            b[40 + i * 4..44 + i * 4].copy_from_slice(&w.to_ne_bytes());
        }
        b[40 + structs_len..40 + structs_len + strings.len()].copy_from_slice(strings);
        b
    }

    #[test]
    fn reads_top_nodes_and_their_properties() {
        let b = blob();
        let fdt = Fdt::parse(&b).unwrap();
        assert_eq!((fdt.address_cells, fdt.size_cells), (2, 2));
        let names: Vec<&str> = fdt.top_nodes().map(|n| n.name).collect();
        assert_eq!(names, ["chosen", "memory", "virtio@a"]);
        assert_eq!(
            fdt.top_node("chosen").unwrap().str_prop("bootargs"),
            Some("sha256")
        );
        let mem = fdt.top_node("memory").unwrap();
        assert_eq!(mem.str_prop("device_type"), Some("memory"));
        assert_eq!(mem.reg().collect::<Vec<_>>(), [(0x4000_0000, 0x1000_0000)]);
        let v = fdt.top_node("virtio").unwrap();
        assert!(v.is_compatible("virtio,mmio") && !v.is_compatible("virtio"));
        assert_eq!(v.reg().collect::<Vec<_>>(), [(0x0a00_0000, 0x200)]);
        assert_eq!(total_size(&b[..8].try_into().unwrap()), Some(512));
        assert_eq!(fdt.bootargs(), "sha256");
        let ram: Vec<(u64, u64, bool)> = fdt.memory_regions(8).map(|r| (r.addr, r.size, r.ram)).collect();
        assert_eq!(ram, [(0x4000_0000, 0x1000_0000, true)]);
        assert_eq!(fdt.memory_regions(0).count(), 0);
        let w = virtio_mmio_windows(fdt.top_nodes());
        assert_eq!(w.iter().collect::<Vec<_>>(), [(0x0a00_0000, 0x200)]);
    }

    #[test]
    fn malformed_blobs_are_refused_or_cut_short_never_a_panic() {
        let b = blob();
        assert_eq!(Fdt::parse(&b[..100]).unwrap_err(), FdtError::BadHeader);
        let mut bad = b;
        bad[0] = 0;
        assert!(matches!(Fdt::parse(&bad), Err(FdtError::BadMagic(_))));
        // Every byte of the structure block flipped in turn: parsing and walking stay bounded.
        for i in 40..200 {
            for x in [0xff, 0x01, 0x80] {
                let mut m = b;
                m[i] ^= x;
                if let Ok(fdt) = Fdt::parse(&m) {
                    for node in fdt.top_nodes().take(100) {
                        let _ = node.props().count();
                        let _ = node.reg().count();
                    }
                }
            }
        }
    }
}
