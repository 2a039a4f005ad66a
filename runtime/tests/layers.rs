//! The runtime's modules form layers that point down only: a module may use what its own
//! layer and the layers below it define, never what a layer above defines. The layers are
//! the table in the crate documentation (`src/lib.rs`, section "Layers"); this test reads
//! that table and every `crate::…` path (and `super::…` path that leaves its top-level
//! module) in `src/**/*.rs`, and fails naming the file, the line and both layers of each
//! path that points up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One layer of the table: its position (1 is the bottom), name and top-level modules.
#[derive(Debug)]
struct Layer {
    rank: usize,
    name: String,
}

/// The layer of every top-level module, from the table in `lib.rs`: rows of
/// `| rank | name | modules |` with the modules in backticks.
fn layer_table(lib_rs: &str) -> BTreeMap<String, Layer> {
    let mut table = BTreeMap::new();
    let mut in_section = false;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with('#') {
            in_section = doc.trim_start_matches('#').trim() == "Layers";
            continue;
        }
        if !in_section || !doc.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = doc.trim_matches('|').split('|').map(str::trim).collect();
        let Some(Ok(rank)) = cells.first().map(|c| c.parse::<usize>()) else {
            continue; // header or separator row
        };
        assert!(
            cells.len() >= 3,
            "lib.rs layer row {rank}: expected | rank | name | modules |"
        );
        for module in cells[2].split('`').skip(1).step_by(2) {
            let previous = table.insert(
                module.to_string(),
                Layer {
                    rank,
                    name: cells[1].to_string(),
                },
            );
            assert!(
                previous.is_none(),
                "lib.rs: module `{module}` is in two layers"
            );
        }
    }
    assert!(
        !table.is_empty(),
        "lib.rs has no layer table (a `# Layers` section with | rank | name | modules | rows)"
    );
    table
}

/// Items the crate root re-exports (`pub use module::Item;` in lib.rs), by the module they
/// come from: `crate::Error` is in the layer of `error`.
fn root_reexports(lib_rs: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        let names = rest.rsplit("::").next().unwrap_or(rest);
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.split(" as ").last().unwrap_or(name).trim();
            if !name.is_empty() {
                items.insert(name.to_string(), module.to_string());
            }
        }
    }
    items
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src`: `exec/net/frame.rs` is `[exec, net, frame]`,
/// `exec/mod.rs` is `[exec]`, `lib.rs` is `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a line without its comment (doc comments included: a link in a doc comment
/// is not a dependency).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            // A character literal: `'"'`, `'\''`, `'\\'`.
            b'\'' if !in_string && bytes.get(i + 1) == Some(&b'\\') => i += 3,
            b'\'' if !in_string && bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first names of the paths in a `{…}` group: `{a::B, c, d::{E}}` gives `a`, `c`, `d`.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in text.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if expect_head && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident_at(&text[i..]).to_string());
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// A top-level module or root item a line of code names.
#[derive(Debug, PartialEq)]
struct Target {
    name: String,
    /// Reached by `super::`: inside an inline module (`mod tests { … }`) a path that seems
    /// to climb to the root may stop short of it, so only known module names count.
    via_super: bool,
}

/// What a line of code names: `crate::x::…`, `crate::{x::…, y}`, and `super::…` paths that
/// climb to the crate root from `module`.
fn targets(code: &str, module: &[String]) -> Vec<Target> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = &rest[..at];
        let after = &rest[at + "crate::".len()..];
        // `$crate::` belongs to a macro; `sluice_runtime::crate::` cannot occur.
        if !before.ends_with('$') && !before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            let names = if after.starts_with('{') {
                group_heads(after)
            } else {
                vec![ident_at(after).to_string()]
            };
            found.extend(names.into_iter().map(|name| Target {
                name,
                via_super: false,
            }));
        }
        rest = after;
    }
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before = &rest[..at];
        if before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            rest = &rest[at + "super::".len()..];
            continue;
        }
        let mut after = &rest[at..];
        let mut climbs = 0;
        while let Some(next) = after.strip_prefix("super::") {
            climbs += 1;
            after = next;
        }
        if climbs >= module.len() {
            let names = if after.starts_with('{') {
                group_heads(after)
            } else {
                vec![ident_at(after).to_string()]
            };
            found.extend(names.into_iter().map(|name| Target {
                name,
                via_super: true,
            }));
        }
        rest = after;
    }
    found.retain(|t| !t.name.is_empty() && t.name != "self");
    found
}

#[test]
fn modules_import_only_from_their_own_layer_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib_rs = std::fs::read_to_string(root.join("lib.rs")).expect("src/lib.rs");
    let layers = layer_table(&lib_rs);
    let reexports = root_reexports(&lib_rs);
    let layer_of = |name: &str| -> Option<(&str, &Layer)> {
        let module = reexports.get(name).map_or(name, String::as_str);
        layers.get_key_value(module).map(|(m, l)| (m.as_str(), l))
    };

    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let module = module_path(relative);
        let Some(top) = module.first() else {
            continue; // lib.rs: the root declares and re-exports every layer
        };
        let shown = format!("src/{}", relative.display());
        let Some(own) = layers.get(top) else {
            violations.push(format!(
                "{shown}: module `{top}` is in no layer of the table in src/lib.rs"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source file");
        for (n, line) in text.lines().enumerate() {
            for Target { name, via_super } in targets(code_of(line), &module) {
                if &name == top {
                    continue;
                }
                match layer_of(&name) {
                    None if via_super => {}
                    None => violations.push(format!(
                        "{shown}:{}: `crate::{name}` is in no layer of the table in \
                         src/lib.rs",
                        n + 1
                    )),
                    Some((target_module, layer)) if layer.rank > own.rank => {
                        violations.push(format!(
                            "{shown}:{}: `{top}` (layer {} {}) uses `{target_module}` \
                             (layer {} {}), a layer above it",
                            n + 1,
                            own.rank,
                            own.name,
                            layer.rank,
                            layer.name
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "{} path(s) point up the layers:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn the_path_reader_finds_what_a_module_uses() {
    let module = vec!["exec".to_string(), "task".to_string()];
    let names = |code: &str| -> Vec<String> {
        targets(code, &module).into_iter().map(|t| t.name).collect()
    };
    assert_eq!(names("use crate::api::Record;"), vec!["api"]);
    assert_eq!(
        names("use crate::{api::Record, state::{self, X}, time};"),
        vec!["api", "state", "time"]
    );
    assert_eq!(names("use super::channel::Msg;"), Vec::<String>::new());
    assert_eq!(names("use super::super::api::X;"), vec!["api"]);
    assert_eq!(names("let e = crate::Error::Cancelled;"), vec!["Error"]);
    assert_eq!(
        code_of("let s = \"a // b\"; // crate::api"),
        "let s = \"a // b\"; "
    );
    assert_eq!(
        code_of("x.replace('\"', \"'\"); // c"),
        "x.replace('\"', \"'\"); "
    );
    assert_eq!(
        names(code_of("/// see [`crate::cli`]")),
        Vec::<String>::new()
    );
    assert_eq!(
        module_path(Path::new("exec/mod.rs")),
        vec!["exec".to_string()]
    );
    assert!(module_path(Path::new("lib.rs")).is_empty());
}
