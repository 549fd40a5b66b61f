//! The layering of xmem-core, checked on its sources (a grep-level check, as the house asks):
//! no system call in it (they are the `xmem-os` crate's, which it re-exports as `os`), and no
//! import cycle between its top-level modules, so that each can be read (and moved into a
//! crate of its own) standing only on those below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (a `//` to the end of the line).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`pool` for src/pool/guard.rs, `error` for
/// src/error.rs); `None` for lib.rs.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

#[test]
fn system_calls_are_made_in_the_os_crate_only() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut offenders = Vec::new();
    for f in &files {
        let code = code(f);
        for needle in [
            "rustix::",
            "libc::",
            "use rustix",
            "use libc",
            "extern \"C\"",
            "syscall(",
        ] {
            if code.contains(needle) {
                offenders.push(format!(
                    "{} uses {needle}",
                    f.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "system calls outside src/os: {offenders:#?}"
    );
    assert!(files.len() > 20, "the sources were read");
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(f) else { continue };
        let code = code(f);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
        // `use crate::{a, b::c}` groups.
        for (i, _) in code.match_indices("crate::{") {
            let group = &code[i + "crate::{".len()..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let to: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    // Depth-first search for a cycle; report the first one found, as a path.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for to in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(to, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle between modules: {}\nall imports: {edges:#?}",
                cycle.join(" → ")
            );
        }
    }
    assert!(
        edges.get("pool").is_some_and(|e| e.contains("error")),
        "the imports were read: {edges:#?}"
    );
}

/// Every crate takes the workspace's lints (unsafe without a SAFETY comment, unreachable `pub`,
/// missing docs), and the test workspace, which cannot inherit them, repeats the unsafe ones.
#[test]
fn every_crate_takes_the_workspace_lints() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = std::fs::read_to_string(crates.parent().unwrap().join("Cargo.toml")).unwrap();
    for lint in [
        "unsafe_op_in_unsafe_fn",
        "missing_docs",
        "unreachable_pub",
        "undocumented_unsafe_blocks",
    ] {
        assert!(
            root.contains(&format!("\n{lint} = ")),
            "workspace lints lack {lint}"
        );
    }
    let mut checked = 0;
    for e in std::fs::read_dir(crates).unwrap() {
        let manifest = e.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let inherits = text.contains("\n[lints]\nworkspace = true");
        let own_workspace = text.contains("\n[workspace]");
        if own_workspace {
            for lint in ["unsafe_op_in_unsafe_fn", "undocumented_unsafe_blocks"] {
                assert!(
                    text.contains(&format!("\n{lint} = \"deny\"")),
                    "{}: {lint}",
                    manifest.display()
                );
            }
        } else {
            assert!(
                inherits,
                "{} lacks `[lints] workspace = true`",
                manifest.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "found only {checked} crates under {}",
        crates.display()
    );
}
