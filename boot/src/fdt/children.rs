//! Nodes below the top level: a node's children, each reading its `reg` in the cell sizes its
//! parent declares (`#address-cells`, `#size-cells`; devicetree specification v0.4 §2.3.5), so
//! boards whose devices sit under a bus node (riscv64 `virt`: `/soc/virtio_mmio@...`,
//! `/soc/serial@...`, `/soc/test@...`) can be discovered with the same bounded walk.

use super::{be32, Fdt, Node, TopNodes};

impl<'a> Node<'a> {
    /// The node's direct children, in order. Each child's [`Node::reg`] uses this node's
    /// `#address-cells` (default 2) and `#size-cells` (default 1).
    pub fn children(&self) -> impl Iterator<Item = Node<'a>> + 'a {
        let cells =
            |name: &str, default: u32| self.prop(name).and_then(|v| be32(v, 0)).unwrap_or(default);
        let fdt = Fdt {
            address_cells: cells("#address-cells", 2),
            size_cells: cells("#size-cells", 1),
            ..self.fdt
        };
        // The same walk as the root's children, started inside this node.
        TopNodes {
            fdt: self.fdt,
            at: self.props,
            depth: 1,
        }
        .map(move |child| Node { fdt, ..child })
    }

    /// The child called `name` (exactly, or `name@...`).
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        self.children().find(|n| n.base_name() == name)
    }

    /// The `#address-cells` and `#size-cells` of the node's parent: the cells its own `reg`
    /// is read in, and the CPU side of a bus node's `ranges`.
    pub fn parent_cells(&self) -> (u32, u32) {
        (self.fdt.address_cells, self.fdt.size_cells)
    }

    /// True if the node's children's addresses are its own parent's (an empty `ranges`,
    /// devicetree specification v0.4 §2.3.8), so a child's `reg` is a CPU address if the
    /// node's own is. Without `ranges` a child's address is not translatable at all; a
    /// non-empty `ranges` (a real translation) is not followed here.
    pub fn maps_children_one_to_one(&self) -> bool {
        self.prop("ranges").is_some_and(<[u8]>::is_empty)
    }
}

impl<'a> Fdt<'a> {
    /// The nodes at the top level and, below a bus that maps them one to one
    /// ([`Node::maps_children_one_to_one`]: riscv64 `virt`'s `/soc`), the bus's devices;
    /// parents first, in tree order. Where boards put the devices the boot code looks for,
    /// each with a `reg` in CPU addresses (read in its parent's cells).
    pub fn shallow_nodes(&self) -> impl Iterator<Item = Node<'a>> + 'a {
        self.top_nodes().flat_map(|top| {
            let bus = top.maps_children_one_to_one().then(|| top.children());
            core::iter::once(top).chain(bus.into_iter().flatten())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    extern crate std;
    use super::super::{BEGIN_NODE, END, END_NODE, MAGIC, PROP};
    use super::*;
    use std::vec::Vec;

    /// A blob: a root (cells 2/2) with a `soc` bus (cells 1/1, `ranges;`) holding
    /// `test@100000` (reg `<0x100000 0x1000>`, which has a grandchild) and `uart@10000000`;
    /// then `cpus` (no `ranges`) with `cpu@0`.
    fn blob() -> Vec<u8> {
        let strings: &[u8] = b"#address-cells\0#size-cells\0reg\0compatible\0ranges\0";
        let off = |name: &[u8]| strings.windows(name.len()).position(|w| w == name).unwrap() as u32;
        let mut s: Vec<u8> = Vec::new();
        let word = |s: &mut Vec<u8>, w: u32| s.extend_from_slice(&w.to_be_bytes());
        let node = |s: &mut Vec<u8>, name: &str| {
            word(s, BEGIN_NODE);
            s.extend_from_slice(name.as_bytes());
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        let prop = |s: &mut Vec<u8>, name: &[u8], value: &[u8]| {
            word(s, PROP);
            word(s, value.len() as u32);
            word(s, off(name));
            s.extend_from_slice(value);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        let cells = |v: &[u32]| v.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        node(&mut s, "");
        prop(&mut s, b"#address-cells", &cells(&[2]));
        prop(&mut s, b"#size-cells", &cells(&[2]));
        node(&mut s, "soc");
        prop(&mut s, b"#address-cells", &cells(&[1]));
        prop(&mut s, b"#size-cells", &cells(&[1]));
        prop(&mut s, b"ranges", &[]);
        node(&mut s, "test@100000");
        prop(&mut s, b"compatible", b"sifive,test1\0sifive,test0\0");
        prop(&mut s, b"reg", &cells(&[0x10_0000, 0x1000]));
        node(&mut s, "inner");
        prop(&mut s, b"reg", &cells(&[1, 2]));
        word(&mut s, END_NODE);
        word(&mut s, END_NODE);
        node(&mut s, "uart@10000000");
        prop(&mut s, b"reg", &cells(&[0x1000_0000, 0x100]));
        word(&mut s, END_NODE);
        word(&mut s, END_NODE);
        node(&mut s, "cpus");
        node(&mut s, "cpu@0");
        prop(&mut s, b"reg", &cells(&[0]));
        word(&mut s, END_NODE);
        word(&mut s, END_NODE);
        word(&mut s, END_NODE);
        word(&mut s, END);
        let total = 40 + s.len() + strings.len();
        let header = [
            MAGIC,
            total as u32,
            40,
            (40 + s.len()) as u32,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            s.len() as u32,
        ];
        let mut b: Vec<u8> = header.iter().flat_map(|w| w.to_be_bytes()).collect();
        b.extend_from_slice(&s);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn children_read_reg_in_their_parents_cells() {
        let b = blob();
        let fdt = Fdt::parse(&b).unwrap();
        let soc = fdt.top_node("soc").unwrap();
        let names: Vec<&str> = soc.children().map(|n| n.name).collect();
        assert_eq!(names, ["test@100000", "uart@10000000"]);
        let test = soc.child("test").unwrap();
        assert!(test.is_compatible("sifive,test0"));
        assert_eq!(test.reg().collect::<Vec<_>>(), [(0x10_0000, 0x1000)]);
        // The grandchild reads in `test`'s cells (none declared: 2 and 1), too long for its reg.
        let inner = test.child("inner").unwrap();
        assert_eq!(inner.reg().count(), 0);
        assert_eq!(
            soc.child("uart").unwrap().reg().collect::<Vec<_>>(),
            [(0x1000_0000, 0x100)]
        );
        assert_eq!(soc.parent_cells(), (2, 2));
        assert_eq!(test.parent_cells(), (1, 1));
        let cpus = fdt.top_node("cpus").unwrap();
        assert_eq!(cpus.children().count(), 1);
        assert!(soc.maps_children_one_to_one() && !cpus.maps_children_one_to_one());
        // `cpu@0`'s reg is a hart id, not an address: `cpus` has no `ranges`.
        let all: Vec<&str> = fdt.shallow_nodes().map(|n| n.name).collect();
        assert_eq!(all, ["soc", "test@100000", "uart@10000000", "cpus"]);
    }

    #[test]
    fn children_of_a_malformed_blob_stay_bounded() {
        let b = blob();
        for i in 40..b.len() {
            for x in [0xff, 0x01, 0x80] {
                let mut m = b.clone();
                m[i] ^= x;
                if let Ok(fdt) = Fdt::parse(&m) {
                    for node in fdt.shallow_nodes().take(100) {
                        let _ = node.props().count();
                        let _ = node.reg().count();
                        for child in node.children().take(100) {
                            let _ = child.reg().count();
                        }
                    }
                }
            }
        }
    }
}
