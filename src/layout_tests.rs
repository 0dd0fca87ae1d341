//! The house rules of `CONTRIBUTING.md`, checked on the source: imports point one way, and
//! no file holds more than 600 lines outside its tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What each module's code (its tests aside) may import of the crate, besides itself. `pb`
/// (the generated types), `text` (which characters text may hold) and `outbound` (every
/// outbound HTTP call, under one policy) are leaves and `metrics` (counters) imports only
/// `pb`; `config`, `telemetry`, `startup` and `main` assemble everything and are not listed.
const RULES: &[(&str, &[&str])] = &[
    (
        "api",
        &[
            "auth", "domain", "events", "metrics", "pb", "text", "webhooks",
        ],
    ),
    (
        "webhooks",
        &["domain", "store", "events", "metrics", "outbound", "text"],
    ),
    ("domain", &["store", "crypto", "text"]),
    ("events", &["store", "metrics"]),
    ("store", &["text"]),
    ("crypto", &[]),
    ("auth", &["outbound", "text"]),
    ("outbound", &[]),
    ("metrics", &["pb"]),
    ("text", &[]),
];

/// Longest a file may be, in lines before its `#[cfg(test)]` tests.
const MAX_CODE_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to: `src/api/parse.rs` and `src/api/mod.rs` are in
/// `api`, `src/metrics.rs` is `metrics`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src()).expect("under src");
    let first = relative.components().next().expect("a component");
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The source up to its test module (`#[cfg(test)]` then `mod tests {`): what a file holds
/// besides its tests.
fn before_tests(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|pair| pair[0] == "#[cfg(test)]" && pair[1].ends_with('{'))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// The code without comment lines (doc comments may name other modules) or tests (a test
/// may build what it needs from anywhere).
fn code(text: &str) -> String {
    before_tests(text)
        .into_iter()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The modules of the crate a piece of code names: `crate::x`, `crate::{x, y::z}`, and, in
/// a module's root file, `super::x`.
fn imported_modules(code: &str, root_file: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if root_file {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if c.is_whitespace() => {}
                        _ if item_start => {
                            found.insert(ident_at(&group[i..]));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.insert(ident_at(rest));
            }
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

#[test]
fn imports_point_one_way() {
    let modules: BTreeSet<String> = rust_files(&src()).iter().map(|f| module_of(f)).collect();
    let test_only = test_only_files();
    let mut broken = Vec::new();
    for file in rust_files(&src()) {
        if test_only.contains(&file) {
            continue;
        }
        let module = module_of(&file);
        let Some((_, allowed)) = RULES.iter().find(|(name, _)| *name == module) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let root_file = name.as_deref() == Some("mod.rs") || file.parent() == Some(&src());
        for imported in imported_modules(&code(&text), root_file) {
            let ours = modules.contains(&imported) || imported == "pb";
            if ours && imported != module && !allowed.contains(&imported.as_str()) {
                broken.push(format!("{} imports {imported}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports that break the layout (see CONTRIBUTING.md):\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_import_scan_sees_paths_groups_and_root_supers() {
    let sample = "use crate::store::{Store, Tx};\nuse crate::{crypto, domain::Hub};\nlet x = crate::metrics::Metrics::default();\nuse super::auth;\nmy_crate::events::x();";
    let found: Vec<String> = imported_modules(sample, true).into_iter().collect();
    assert_eq!(found, ["auth", "crypto", "domain", "metrics", "store"]);
    let found: Vec<String> = imported_modules(sample, false).into_iter().collect();
    assert_eq!(found, ["crypto", "domain", "metrics", "store"]);
    assert!(imported_modules(&code("    /// see crate::store\nfn f() {}"), false).is_empty());
    let tested = "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::store::Store;\n}\n";
    assert!(imported_modules(&code(tested), false).is_empty());
}

/// Files that are test modules as a whole (`#[cfg(test)] mod x;`).
fn test_only_files() -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for file in rust_files(&src()) {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().map(Path::to_path_buf),
            _ => Some(file.with_extension("")),
        };
        let Some(dir) = dir else { continue };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] != "#[cfg(test)]" {
                continue;
            }
            let declared = pair[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'));
            if let Some(name) = declared {
                test_only.insert(dir.join(format!("{name}.rs")));
            }
        }
    }
    test_only
}

#[test]
fn no_file_holds_more_than_600_lines_outside_its_tests() {
    let test_only = test_only_files();
    let mut long = Vec::new();
    for file in rust_files(&src()) {
        if test_only.contains(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let lines = before_tests(&text).len();
        if lines > MAX_CODE_LINES {
            long.push(format!("{}: {lines} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these along their seams (at most {MAX_CODE_LINES} lines of code a file):\n{}",
        long.join("\n")
    );
}
