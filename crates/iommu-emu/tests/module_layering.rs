//! The crate's top-level modules form a layered graph, not a web: no module reaches back into
//! one that depends on it. In particular the IOMMU (`iommu`, `prq`, `tlb`) never imports the
//! endpoint; the endpoint plugs into the IOMMU through `iommu::PageResponseSink`.
//!
//! Reads the crate's sources, collects every `crate::<module>` path (and `crate::<Item>` paths
//! through the root's `pub use` re-exports) per top-level module (`src/x.rs` or `src/x/`), and
//! looks for a cycle. Comments are ignored: a doc link is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules and the files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    for entry in fs::read_dir(src).expect("read src/") {
        let path = entry.expect("dir entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            mods.entry(name)
                .or_insert_with(Vec::new)
                .extend(rs_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            mods.entry(name).or_insert_with(Vec::new).push(path);
        }
    }
    mods
}

fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("read module dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rs_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The source without `//` comments (doc comments included).
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read source");
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of each path that follows `crate::` (expanding `crate::{a, b::c}`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !preceded_by_ident {
            if let Some(group) = after.strip_prefix('{') {
                out.extend(group_heads(group));
            } else {
                out.push(ident_at(after));
            }
        }
        rest = after;
    }
    out
}

/// The first segment of each top-level item of a `{ ... }` use group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if at_item_start && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident_at(&group[i..]));
                at_item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Item name → module, from the root's `pub use module::{...}` re-exports.
fn reexports(lib: &str, mods: &BTreeMap<String, Vec<PathBuf>>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(body) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(body);
        if !mods.contains_key(&module) {
            continue;
        }
        let items = body[module.len()..].trim_start_matches("::");
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

fn module_graph() -> Graph {
    let src = src_dir();
    let mods = modules(&src);
    let lib = code_of(&src.join("lib.rs"));
    let items = reexports(&lib, &mods);
    let mut graph = Graph::new();
    for (name, files) in &mods {
        let deps = graph.entry(name.clone()).or_default();
        for file in files {
            for head in crate_paths(&code_of(file)) {
                let target = if mods.contains_key(&head) {
                    Some(head)
                } else {
                    items.get(&head).cloned()
                };
                if let Some(t) = target.filter(|t| t != name) {
                    deps.insert(t);
                }
            }
        }
    }
    graph
}

/// A cycle of the graph (first node repeated at the end), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(dep, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = module_graph();
    let cycle = find_cycle(&graph);
    assert!(
        cycle.is_none(),
        "import cycle between top-level modules: {}\nfull graph: {graph:#?}",
        cycle.unwrap_or_default().join(" -> ")
    );
}

#[test]
fn the_iommu_side_never_imports_the_endpoint() {
    let graph = module_graph();
    for m in ["iommu", "prq", "tlb", "spec"] {
        assert!(
            !graph[m].contains("endpoint"),
            "{m} imports endpoint: {:?}",
            graph[m]
        );
    }
}

#[test]
fn the_scanner_sees_the_known_edges() {
    // Guards the scanner itself: if it found nothing, the cycle check would pass vacuously.
    let graph = module_graph();
    assert!(graph["endpoint"].contains("iommu"));
    assert!(graph["iommu"].contains("prq"));
    assert!(
        graph["demo"].contains("endpoint"),
        "via the root's re-exports"
    );
    assert_eq!(
        crate_paths("use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h();"),
        ["a", "c", "d", "g"]
    );
}
