//! The daemon's layout rules, read from its sources: no two files import
//! each other (directly or around a circle), backends import no
//! capability, capabilities import no transport. A module may use its own
//! ancestors' items (a parent declares its children), which is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `daemon/src`, by module path (`crate::store::writer`).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter(|p| !p.ends_with("main.rs"))
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            let mut name = String::from("crate");
            for part in parts {
                name.push_str("::");
                name.push_str(&part);
            }
            (name, p)
        })
        .collect()
}

/// The module a path names, resolved from `from` (`super::`, `self::`,
/// `crate::`): the longest known module that is a prefix of it.
fn target(from: &str, path: &str, known: &BTreeMap<String, PathBuf>) -> Option<String> {
    // `from` is the file's module: `foo` for `foo/mod.rs`, `foo::bar` for
    // `foo/bar.rs`, so `super` drops its last part either way.
    let mut base: Vec<&str> = from.split("::").collect();
    let mut rest = path;
    let full = if let Some(r) = rest.strip_prefix("crate::") {
        format!("crate::{r}")
    } else {
        loop {
            if let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            } else if let Some(r) = rest.strip_prefix("self::") {
                rest = r;
            } else {
                break;
            }
        }
        format!("{}::{rest}", base.join("::"))
    };
    let segments: Vec<&str> = full.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| known.contains_key(m))
}

/// Module paths a file refers to (`use` lines and `crate::`/`super::`
/// paths in code; comments skipped).
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        for start in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(i) = code[from..].find(start) {
                let at = from + i;
                // A whole path: not the tail of another identifier.
                let fresh = at == 0
                    || !code.as_bytes()[at - 1].is_ascii_alphanumeric()
                        && code.as_bytes()[at - 1] != b'_'
                        && code.as_bytes()[at - 1] != b':';
                let path: String = code[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if fresh {
                    out.insert(path.trim_end_matches(':').to_string());
                }
                from = at + start.len();
            }
        }
        // `use super::{a, b::c}` and `use crate::{x, y}`: each item.
        if let (Some(open), Some(close)) = (code.find("::{"), code.rfind('}')) {
            if code.contains("use ") && open < close {
                let prefix = code[..open].rsplit(' ').next().unwrap_or("").to_string();
                for item in code[open + 3..close].split(',') {
                    let item = item.trim().split(' ').next().unwrap_or("");
                    if !item.is_empty()
                        && item.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    {
                        out.insert(format!("{prefix}::{item}"));
                    }
                }
            }
        }
    }
    out
}

/// The file-level import graph: module -> modules it refers to, without
/// its own ancestors or itself.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let known = modules();
    let mut g = BTreeMap::new();
    for (module, path) in &known {
        let text = std::fs::read_to_string(path).unwrap();
        let mut to = BTreeSet::new();
        for r in references(&text) {
            if let Some(t) = target(module, &r, &known) {
                let ancestor = module == &t || module.starts_with(&format!("{t}::"));
                if !ancestor {
                    to.insert(t);
                }
            }
        }
        g.insert(module.clone(), to);
    }
    g
}

#[test]
fn no_two_files_of_the_daemon_import_each_other() {
    let g = graph();
    // Depth-first search for a circle, reporting the first one found.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut circle = stack[i..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for t in g.get(m).into_iter().flatten() {
            // A module importing its own descendant is the usual shape of
            // a parent (mod.rs) using its files; a circle must come back
            // up through a file that is not its ancestor.
            if let Some(c) = visit(t, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        let mut stack = Vec::new();
        if let Some(circle) = visit(m, &g, &mut stack, &mut done) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn backends_import_no_capability_and_capabilities_no_transport() {
    let g = graph();
    let under = |m: &str, top: &str| m == top || m.starts_with(&format!("{top}::"));
    for (m, to) in &g {
        for t in to {
            for backend in ["crate::redis", "crate::store"] {
                if under(m, backend) {
                    for cap in [
                        "crate::sequences",
                        "crate::tracker",
                        "crate::cache",
                        "crate::dispatch",
                        "crate::app",
                        "crate::transport",
                    ] {
                        assert!(!under(t, cap), "{m} (a backend) imports {t}");
                    }
                }
            }
            for cap in ["crate::sequences", "crate::tracker", "crate::cache"] {
                if under(m, cap) {
                    for front in [
                        "crate::dispatch",
                        "crate::transport",
                        "crate::app",
                        "crate::server",
                    ] {
                        assert!(!under(t, front), "{m} (a capability) imports {t}");
                    }
                }
            }
        }
    }
}

#[test]
fn the_graph_sees_the_imports_it_checks() {
    // The reader must find real edges, or the tests above prove nothing.
    let g = graph();
    let edge = |a: &str, b: &str| g.get(a).is_some_and(|to| to.contains(b));
    assert!(edge("crate::store::writer", "crate::store::outbox"));
    assert!(edge("crate::store::tables", "crate::store::writer"));
    assert!(edge("crate::sequences::redis", "crate::store"));
    assert!(edge("crate::redis::link", "crate::redis::breakers"));
    assert!(edge("crate::dispatch", "crate::sequences"));
}

#[test]
fn the_layout_page_names_every_file_of_the_daemon() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/layout.md"))
            .unwrap();
    let missing: Vec<String> = modules()
        .values()
        .chain(std::iter::once(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs"),
        ))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            (!page.contains(&name)).then_some(name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/layout.md does not name {missing:?}"
    );
}
