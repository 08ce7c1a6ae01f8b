//! The dependency picture: within each crate, the top-level modules (from `crate::x` paths
//! in non-test code) form no import cycle. `scripts/module_deps.py` prints the same graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.contains("tests") || name == "test_util.rs" {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap();
        let me = rel
            .components()
            .next()
            .map(|c| {
                let s = c.as_os_str().to_string_lossy();
                s.strip_suffix(".rs").unwrap_or(&s).to_string()
            })
            .unwrap();
        if me == "lib" || me == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let entry = deps.entry(me.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if word != me && modules.contains(&word) {
                    entry.insert(word);
                }
            }
        }
    }
    deps
}

fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in deps.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                None => {
                    if let Some(c) = visit(m, deps, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in deps.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, deps, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_of_each_crate_form_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["mimo-core", "mimo-data", "mimo-train", "mimo-bench", "."] {
        let deps = graph(&root.join(krate).join("src"));
        assert!(deps.len() > 3, "{krate}: {deps:?}");
        if let Some(cycle) = find_cycle(&deps) {
            panic!("{krate}: import cycle {}", cycle.join(" -> "));
        }
    }
    // The generic checkpoint reader imports no model.
    let core = graph(&root.join("mimo-core/src"));
    assert!(core["loader"].is_empty(), "{:?}", core["loader"]);
}
