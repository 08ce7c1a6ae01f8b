//! Reading experiment files as RON values and merging an override over its `base` chain:
//! nested structures merge field by field, lists and values replace, and the base's relative
//! paths are rebased onto the override's directory.

use std::path::{Path, PathBuf};

use super::ExperimentError;

pub(super) fn read(path: &Path) -> Result<String, ExperimentError> {
    std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn parse_value(path: &Path, text: &str) -> Result<ron::Value, ExperimentError> {
    ron::from_str(text).map_err(|e| ExperimentError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

pub(super) fn field<'a>(v: &'a ron::Value, name: &str) -> Option<&'a ron::Value> {
    match v {
        ron::Value::Map(m) => m
            .iter()
            .find(|(k, _)| matches!(k, ron::Value::String(s) if s == name))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// `over` on top of `base`: maps merge key by key, anything else replaces.
pub(super) fn merge(base: ron::Value, over: ron::Value) -> ron::Value {
    match (base, over) {
        (ron::Value::Map(mut b), ron::Value::Map(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            ron::Value::Map(b)
        }
        (ron::Value::Option(Some(b)), ron::Value::Option(Some(o))) => {
            ron::Value::Option(Some(Box::new(merge(*b, *o))))
        }
        (_, o) => o,
    }
}

/// Rewrites the relative paths of a value read from `file` so they are relative to
/// `target_dir` instead (the base's paths stay correct once merged into an override).
pub(super) fn rebase_paths(v: &mut ron::Value, from_dir: &Path) {
    let ron::Value::Map(m) = v else { return };
    let fix = |s: &mut String| {
        let p = Path::new(s.as_str());
        if p.is_relative() {
            *s = from_dir.join(p).display().to_string();
        }
    };
    let fix_value = |v: &mut ron::Value| match v {
        ron::Value::String(s) => fix(s),
        ron::Value::Option(Some(b)) => {
            if let ron::Value::String(s) = b.as_mut() {
                fix(s)
            }
        }
        _ => {}
    };
    for (k, val) in m.iter_mut() {
        let ron::Value::String(key) = k else { continue };
        match key.as_str() {
            "model" => fix_value(val),
            "data" => {
                if let ron::Value::Map(d) = val {
                    for (k2, v2) in d.iter_mut() {
                        match k2 {
                            ron::Value::String(s)
                                if s == "records" || s == "build" || s == "clip_cache" =>
                            {
                                fix_value(v2)
                            }
                            ron::Value::String(s) if s == "vqa" => {
                                if let ron::Value::Seq(items) = v2 {
                                    for it in items {
                                        if let ron::Value::Map(f) = it {
                                            for (k3, v3) in f.iter_mut() {
                                                if matches!(k3, ron::Value::String(s) if s == "path" || s == "images")
                                                {
                                                    fix_value(v3);
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// `to` expressed relative to `from`... both as given (no canonicalisation): the path that,
/// joined onto `from`, names `to`'s entries. Falls back to `to` itself.
pub(super) fn relative_to(to: &Path, from: &Path) -> PathBuf {
    // Files are resolved by joining onto the experiment's directory, so an absolute base
    // directory works everywhere; a relative one is kept relative when it extends `from`.
    match to.strip_prefix(from) {
        Ok(rest) => rest.to_path_buf(),
        Err(_) => std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf()),
    }
}
