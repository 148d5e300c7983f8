//! The shape of `src/`, checked: `src/lib.rs` lists the top-level modules in the order the data
//! flows, and a module may use only modules listed above it — so there are no import circles
//! between top-level modules, nothing below the commands layer reaches up into it, and the list
//! stays a true map. Within each module, its files import each other without circles too; and
//! `main.rs` stays a parser and runner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (e.g. `record::readers::chunks`) of every `.rs` file of the library.
fn library_files(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["main"] {
                return None;
            }
            if parts == ["lib"] {
                parts.clear();
            }
            Some((parts, p))
        })
        .collect()
}

/// The source without comments, string and char literals (their text is not code).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if b.get(i + 1) == Some(&b'#') || (b.get(i + 1) == Some(&b'"') && !ident_byte(b, i)) => {
                // Raw string: r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                let close = if b.get(i + 1) == Some(&b'\\') {
                    (i + 3..b.len().min(i + 12)).find(|&k| b[k] == b'\'')
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match close {
                    Some(k) => {
                        out.push_str("' '");
                        i = k + 1;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn ident_at(s: &[u8], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == b'_') {
        j += 1;
    }
    (j > i).then(|| (String::from_utf8_lossy(&s[i..j]).into_owned(), j))
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Every path a file names that starts at `crate::`, `super::` or `self::`, resolved to an
/// absolute path (segments only; the caller finds the module it lands in). `use x::{a, b::c}`
/// groups give one path per member.
fn referenced_paths(file_module: &[String], code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut paths = Vec::new();
    // Inline modules (`mod tests { … }`) change what `super` and `self` mean inside them.
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'{' => {
                depth += 1;
                i += 1;
                continue;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                while scope.last().is_some_and(|(_, d)| *d > depth) {
                    scope.pop();
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        if ident_byte(s, i) {
            i += 1;
            continue;
        }
        let Some((word, end)) = ident_at(s, i) else {
            i += 1;
            continue;
        };
        if word == "mod" {
            let j = skip_ws(s, end);
            if let Some((name, k)) = ident_at(s, j) {
                let k = skip_ws(s, k);
                if s.get(k) == Some(&b'{') {
                    scope.push((name, depth + 1));
                }
            }
            i = end;
            continue;
        }
        let here: Vec<String> = file_module.iter().cloned().chain(scope.iter().map(|(n, _)| n.clone())).collect();
        let base: Option<Vec<String>> = match word.as_str() {
            "crate" => Some(Vec::new()),
            "self" => Some(here.clone()),
            "super" => Some(here[..here.len().saturating_sub(1)].to_vec()),
            _ => None,
        };
        let Some(mut base) = base else {
            i = end;
            continue;
        };
        let mut j = end;
        // Further `super::` segments and plain segments.
        loop {
            if s.get(j) == Some(&b':') && s.get(j + 1) == Some(&b':') {
                let k = skip_ws(s, j + 2);
                if s.get(k) == Some(&b'{') {
                    // A group: each member's first segment.
                    let mut d = 0;
                    let mut m = k;
                    let mut member_start = true;
                    while m < s.len() {
                        match s[m] {
                            b'{' => {
                                d += 1;
                                member_start = d == 1;
                            }
                            b'}' => {
                                d -= 1;
                                if d == 0 {
                                    break;
                                }
                            }
                            b',' if d == 1 => member_start = true,
                            c if member_start && (c.is_ascii_alphabetic() || c == b'_') => {
                                if let Some((seg, e)) = ident_at(s, m) {
                                    let mut p = base.clone();
                                    if seg != "self" {
                                        p.push(seg);
                                        // `group::{a::b}`: the second segment too.
                                        if s.get(e) == Some(&b':')
                                            && s.get(e + 1) == Some(&b':')
                                            && let Some((seg2, _)) = ident_at(s, e + 2)
                                        {
                                            p.push(seg2);
                                        }
                                    }
                                    paths.push(p);
                                    m = e;
                                    member_start = false;
                                    continue;
                                }
                            }
                            _ => {}
                        }
                        m += 1;
                    }
                    j = m;
                    base.clear();
                    break;
                }
                match ident_at(s, k) {
                    Some((seg, e)) if seg == "super" => {
                        base.pop();
                        j = e;
                    }
                    Some((seg, e)) => {
                        base.push(seg);
                        j = e;
                    }
                    None => break,
                }
            } else {
                break;
            }
        }
        if !base.is_empty() {
            paths.push(base);
        }
        i = j.max(end);
    }
    paths
}

struct Crate {
    /// Top-level modules in the order `lib.rs` declares them.
    order: Vec<String>,
    modules: BTreeSet<Vec<String>>,
    files: Vec<(Vec<String>, PathBuf, String)>,
}

fn load() -> Crate {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let order: Vec<String> = code_only(&lib)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").map(|m| m.trim_end_matches(';').trim().to_string()))
        .collect();
    let files: Vec<(Vec<String>, PathBuf, String)> = library_files(&src)
        .into_iter()
        .map(|(m, p)| {
            let text = std::fs::read_to_string(&p).expect("read");
            (m, p, code_only(&text))
        })
        .collect();
    let modules = files.iter().map(|(m, _, _)| m.clone()).collect();
    Crate { order, modules, files }
}

impl Crate {
    /// The longest module prefix of `path` (an item's path lands in the module that defines it).
    fn module_of(&self, path: &[String]) -> Option<Vec<String>> {
        (1..=path.len()).rev().map(|k| path[..k].to_vec()).find(|p| self.modules.contains(p))
    }

    /// (from file module, to module) for every reference out of the file's own module.
    fn edges(&self) -> Vec<(Vec<String>, Vec<String>, PathBuf)> {
        let mut out = Vec::new();
        for (m, p, code) in &self.files {
            for path in referenced_paths(m, code) {
                if let Some(to) = self.module_of(&path)
                    && &to != m
                {
                    out.push((m.clone(), to, p.clone()));
                }
            }
        }
        out
    }
}

#[test]
fn lib_rs_lists_every_module_and_each_uses_only_those_above_it() {
    let c = load();
    let tops: BTreeSet<String> = c.modules.iter().filter(|m| m.len() == 1).map(|m| m[0].clone()).collect();
    let listed: BTreeSet<String> = c.order.iter().cloned().collect();
    assert_eq!(tops, listed, "src/lib.rs must declare every top-level module (and only those)");
    let rank: BTreeMap<&str, usize> = c.order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut upward = BTreeSet::new();
    for (from, to, file) in c.edges() {
        let (Some(a), Some(b)) = (from.first(), to.first()) else { continue };
        if a != b && rank[b.as_str()] > rank[a.as_str()] {
            upward.insert(format!("{} uses {b} (listed below {a} in src/lib.rs)", file.display()));
        }
    }
    assert!(
        upward.is_empty(),
        "modules that reach up the data path:\n{}",
        upward.into_iter().collect::<Vec<_>>().join("\n")
    );
    // The map in the doc comment names the modules in the same order as the declarations.
    let lib = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("lib");
    let mut documented = Vec::new();
    for line in lib.lines().filter(|l| l.starts_with("//! - ")) {
        for piece in line.split("[`").skip(1) {
            if let Some(name) = piece.split("`]").next()
                && rank.contains_key(name)
                && !documented.contains(&name.to_string())
            {
                documented.push(name.to_string());
            }
        }
    }
    assert_eq!(documented, c.order, "the module map in src/lib.rs lists the modules in declaration order");
}

#[test]
fn no_import_circles_between_the_files_of_a_module() {
    let c = load();
    // The graph between sibling files of every module (deeper references count for the sibling
    // that contains them).
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, to, _) in c.edges() {
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common + 1 > from.len() || common + 1 > to.len() {
            continue; // parent and child: a module uses what it declares, or the reverse
        }
        let a = from[..=common].to_vec();
        let b = to[..=common].to_vec();
        graph.entry(a).or_default().insert(b);
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m) {
                Some(1) => {
                    let at = stack.iter().position(|x| x == m).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(n, &graph, &mut state, &mut stack) {
                let names: Vec<String> = cycle.iter().map(|p| p.join("::")).collect();
                panic!("import circle: {}", names.join(" → "));
            }
        }
    }
}

#[test]
fn the_checker_sees_imports_it_must_see() {
    // The parser above is what the two tests stand on: check it finds the forms used in src/.
    let m = vec!["record".to_string(), "readers".to_string(), "chunks".to_string()];
    let code = code_only(
        "use super::geometry::Geometry;\nuse crate::{decode::bslz4, limits};\n// crate::report::x\n\
         let s = \"crate::cli\";\nfn f() { crate::alarms::forecast::fit(); }\nmod tests { use super::*; use super::super::h5frames; }",
    );
    let paths = referenced_paths(&m, &code);
    let has = |p: &[&str]| paths.iter().any(|x| x.iter().map(String::as_str).eq(p.iter().copied()));
    assert!(has(&["record", "readers", "geometry", "Geometry"]), "{paths:?}");
    assert!(has(&["decode", "bslz4"]) && has(&["limits"]), "{paths:?}");
    assert!(has(&["alarms", "forecast", "fit"]), "{paths:?}");
    assert!(has(&["record", "readers", "chunks"]), "super inside an inline module is the file: {paths:?}");
    assert!(has(&["record", "readers", "h5frames"]), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.first().is_some_and(|s| s == "report" || s == "cli")),
        "comments and strings: {paths:?}"
    );
}

#[test]
fn main_rs_only_parses_and_runs() {
    let main = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).expect("main");
    let lines = main.lines().count();
    assert!(lines < 200, "src/main.rs has {lines} lines: the command line belongs in src/cli/");
    assert!(!main.contains("#[derive("), "src/main.rs defines types; they belong in src/cli/");
}
