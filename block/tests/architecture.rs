//! The layering of `block/src`, kept by a test rather than by memory: every `crate::` path in
//! the code of a module (imports and inline paths alike, comments and test code aside) must name
//! a module of its own layer or a lower one. Layers, bottom to top, as `docs/ARCHITECTURE.md`
//! draws them; modules of one layer must not import each other either, unless listed as the
//! same module.

#![allow(clippy::unwrap_used)] // reason: a test

use std::path::{Path, PathBuf};

/// Top-level modules of `block/src`, lowest layer first. Modules in one inner slice share a
/// layer and must not import each other.
const LAYERS: &[&[&str]] = &[
    &["options", "clock", "dev", "codec"],
    &["error"],
    &["node"],
    &["io"],
    &["driver"],
    &["path"],
    &["graph"],
    &["backend"],
    &["cmd"],
];

/// The layer of top-level module `m`.
fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

/// An import that runs up (or sideways across) the layers.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The violations in `text`, the source of a file of top-level module `module`.
fn check_source(file: &str, module: &str, text: &str) -> Vec<Violation> {
    let Some(own) = layer(module) else {
        return vec![Violation { file: file.into(), line: 0, from: module.into(), to: "(module not in LAYERS)".into() }];
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break; // unit tests may use anything
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or(code);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let up = match layer(&name) {
                Some(l) => l > own || (l == own && name != module),
                None => true,
            };
            if up {
                out.push(Violation { file: file.into(), line: i + 1, from: module.into(), to: name });
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_import_runs_up_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "found only {} files under {}", files.len(), src.display());
    let mut violations = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first);
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        violations.extend(check_source(&rel.display().to_string(), module, &text));
    }
    let report: Vec<String> = violations.iter().map(|v| format!("{}:{}: `{}` imports `crate::{}`", v.file, v.line, v.from, v.to)).collect();
    assert!(violations.is_empty(), "imports that run up a layer:\n{}", report.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    let v = check_source("io/leaf.rs", "io", "use crate::node::NodeId;\nuse crate::driver::FormatState;\n");
    assert_eq!(v, vec![Violation { file: "io/leaf.rs".into(), line: 2, from: "io".into(), to: "driver".into() }]);
    // Inline paths count as much as `use` lines; comments and unit tests do not.
    let v = check_source("driver/x.rs", "driver", "// crate::graph\nlet s = crate::path::walk::read;\n#[cfg(test)]\nuse crate::graph::Graph;\n");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].to, "path");
    // Modules of one layer do not import each other.
    assert_eq!(check_source("dev/x.rs", "dev", "use crate::options::Options;\n").len(), 1);
    assert!(check_source("path/x.rs", "path", "use crate::io::Io;\nuse crate::path::Stack;\n").is_empty());
}
