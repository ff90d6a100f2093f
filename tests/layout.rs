//! The house rules that keep kite easy to carry on, checked on the source:
//! no source file over 400 lines (tests aside), and no import circles,
//! neither between kite's top-level modules nor between the submodules of
//! one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a source file may be, tests aside.
const MAX_LINES: usize = 400;

/// One module's file: its path in the crate (`["proxy", "conn"]`) and text.
struct Module {
    path: Vec<String>,
    text: String,
}

/// Every module of the library under `src/`, but the tests beside the code
/// (`tests.rs`) and the binary's `main.rs`.
fn modules() -> Vec<Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&src).unwrap().with_extension("");
            let mut path: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let last = path.last().cloned().unwrap_or_default();
            if last == "tests" || last == "main" || path.iter().any(|p| p == "tests") {
                return None;
            }
            if last == "mod" || last == "lib" {
                path.pop();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            Some(Module { path, text })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a module without its tests: a `#[cfg(test)] mod tests {`
/// ends the shipping code (by this crate's habit it comes last), and the
/// line after any other `#[cfg(test)]` (`mod tests;`, a test-only `use`) is
/// left out.
fn shipping_text(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            match lines.next() {
                Some(next) if next.trim_start().starts_with("mod tests {") => break,
                _ => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The module paths that `text` (of the module at `at`) names through
/// `crate::…` and `super::…`, brace groups included (`use super::{a, b}`).
fn references(at: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (i, _) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
        {
            // Not the tail of a longer word (`kite::crate::`, `xsuper::`).
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut base: Vec<String> = if code[i..].starts_with("crate::") {
                Vec::new()
            } else {
                at[..at.len().saturating_sub(1)].to_vec()
            };
            let mut rest = &code[i + code[i..].find("::").unwrap() + 2..];
            // Further `super::` steps.
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            for path in paths(rest) {
                let mut full = base.clone();
                full.extend(path);
                out.push(full);
            }
        }
    }
    out
}

/// The paths a use tree starts with: `a::b::C` gives `[a, b, C]`;
/// `{a, b::c}` gives `[a]` and `[b, c]`.
fn paths(tree: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(group) = tree.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&group[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items
            .into_iter()
            .flat_map(|item| paths(item.trim()))
            .collect();
    }
    let mut path = Vec::new();
    let mut rest = tree;
    loop {
        let word = ident(rest);
        if word.is_empty() {
            break;
        }
        rest = &rest[word.len()..];
        path.push(word);
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with('{') => {
                let mut out = paths(r);
                for p in &mut out {
                    p.splice(0..0, path.iter().cloned());
                }
                return out;
            }
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![path]
}

/// The longest prefix of `path` that is a module of `known`.
fn module_of<'a>(path: &[String], known: &'a BTreeSet<Vec<String>>) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|n| known.get(&path[..n].to_vec()))
}

/// A cycle in `edges`, if any, as the modules along it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_source_file_is_over_400_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| f.file_stem().is_some_and(|s| s != "tests"))
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by role (tests go in foo/tests.rs): {long:?}"
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = modules();
    assert!(modules.len() > 10, "found only {} modules", modules.len());
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    // Between top-level modules, and between siblings inside one module
    // (a child naming its parent's own items is not an import circle).
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &modules {
        for r in references(&m.path, &shipping_text(&m.text)) {
            let Some(to) = module_of(&r, &known) else {
                continue;
            };
            let (from, to) = (&m.path, to);
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            // The modules just below where the two paths part.
            let (Some(a), Some(b)) = (from.get(common), to.get(common)) else {
                continue; // one contains the other
            };
            let parent = from[..common].join("::");
            edges
                .entry(format!("{parent}::{a}"))
                .or_default()
                .insert(format!("{parent}::{b}"));
        }
    }
    assert!(
        edges.keys().any(|k| k == "::proxy") && edges.values().flatten().any(|v| v == "::config"),
        "the import graph looks empty: {edges:?}"
    );
    if let Some(found) = cycle(&edges) {
        panic!(
            "an import circle: {} (from {} files)",
            found.join(" -> "),
            modules.len()
        );
    }
}

#[test]
fn the_checker_sees_circles() {
    let at = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        references(&at("attach::docker"), "use super::{short_id, tls};"),
        vec![at("attach::short_id"), at("attach::tls")]
    );
    assert_eq!(
        references(&at("cli"), "value_parser = crate::attach::parse_task_ref,"),
        vec![at("attach::parse_task_ref")]
    );
    assert_eq!(
        references(&at("a::b::c"), "use super::super::x::{y::Z, w};"),
        vec![at("a::x::y::Z"), at("a::x::w")]
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("cli", "attach"), ("attach", "config"), ("config", "cli")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    assert!(cycle(&edges).is_some());
    edges.get_mut("config").unwrap().clear();
    assert!(cycle(&edges).is_none());
}
