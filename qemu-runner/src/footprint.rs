//! The block layer's share of the kernel's static footprint, computed from the kernel ELF's
//! symbol table: the sizes of every symbol whose Rust path starts in `strata_block` (functions,
//! including monomorphised generics and trait impls on block types, and statics), by section.
//!
//! The kernel reports its sections (text, rodata, data, bss) itself at boot (the `footprint`
//! record); it cannot see which crate its bytes came from, the symbol table can. Code that LTO
//! inlined into a kernel function counts as the kernel's: the share is a lower bound.

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use serde::Serialize;

/// Bytes attributed to `strata_block`, by section kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BlockShare {
    /// Code.
    pub text: u64,
    /// Read-only data (constant tables, string literals owned by block symbols).
    pub rodata: u64,
    /// Initialised writable data.
    pub data: u64,
    /// Zero-initialised data.
    pub bss: u64,
}

/// True if a (legacy-mangled) symbol's path starts in `strata_block`: `_ZN12strata_block...`,
/// or a trait impl on a block type, `_ZN..._$LT$strata_block..Type$u20$as$u20$...`.
pub fn is_block_symbol(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("_ZN") else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(len) = rest[..digits].parse::<usize>() else { return false };
    let Some(first) = rest.get(digits..digits + len) else { return false };
    first == "strata_block" || first.starts_with("_$LT$strata_block..")
}

/// The block layer's share of the ELF `elf`.
pub fn block_share(elf: &[u8]) -> Result<BlockShare, String> {
    let file = object::File::parse(elf).map_err(|e| format!("kernel ELF: {e}"))?;
    let mut share = BlockShare::default();
    for sym in file.symbols() {
        if !matches!(sym.kind(), SymbolKind::Text | SymbolKind::Data) || sym.size() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if !is_block_symbol(name) {
            continue;
        }
        let Some(index) = sym.section_index() else { continue };
        let Ok(section) = file.section_by_index(index) else { continue };
        let slot = match section.kind() {
            SectionKind::Text => &mut share.text,
            SectionKind::ReadOnlyData | SectionKind::ReadOnlyString => &mut share.rodata,
            SectionKind::Data => &mut share.data,
            SectionKind::UninitializedData => &mut share.bss,
            _ => continue,
        };
        *slot += sym.size();
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_symbols() {
        assert!(is_block_symbol("_ZN12strata_block2io4leaf10move_bytes17h0123456789abcdefE"));
        assert!(is_block_symbol(
            "_ZN96_$LT$strata_block..dev..virtio..VirtioBlk$LT$H$C$T$GT$$u20$as$u20$strata_block..dev..BlockDevice$GT$6submit17h0123E"
        ));
        assert!(!is_block_symbol("_ZN13strata_kernel4main17h0123E"));
        assert!(!is_block_symbol("_ZN4core3fmt5write17h0123E"));
        assert!(!is_block_symbol("memcpy"));
        assert!(!is_block_symbol("_ZN99short"));
    }
}
