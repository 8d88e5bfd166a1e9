//! Links the kernel with the board's linker script and defmt's symbol table script.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os != "none" {
        return;
    }
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let board = match target_arch.as_str() {
        "x86_64" => "x86_64-pvh",
        "aarch64" => "aarch64-virt",
        "riscv64" => "riscv64-virt",
        other => panic!("no board for target_arch {other}"),
    };
    let script = manifest.join("../targets").join(board).join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
