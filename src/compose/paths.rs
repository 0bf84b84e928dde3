//! Making the relative paths of one canonical compose file absolute, against the folder they
//! are relative to (the project dir for `-f` files, the file's own folder for `extends` and
//! `include` files).

use std::path::{Component, Path, PathBuf};

use super::node::{Node, Value};

/// Cleans a path lexically (`a/./b/../c` to `a/c`), as Go's `filepath.Clean`, without touching
/// the file system (the path may not exist yet).
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// `path` made absolute against `base`, with `~` expanded from `home`, and cleaned.
pub fn absolute(base: &Path, path: &str, home: Option<&str>) -> String {
    let expanded = match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => path.to_string(),
    };
    let p = Path::new(&expanded);
    let joined = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    clean(&joined).to_string_lossy().into_owned()
}

/// Whether a build context is a remote one (git or http), which stays as written.
fn is_remote_context(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

fn fix(node: Option<&mut Node>, base: &Path, home: Option<&str>) {
    if let Some(Node { value: Value::Str(s), .. }) = node {
        *s = absolute(base, s, home);
    }
}

/// Resolves every relative path in a canonical compose file tree against `base`.
pub fn resolve(root: &mut Node, base: &Path, home: Option<&str>) {
    let Some(map) = root.as_map_mut() else { return };
    if let Some(services) = map.get_mut("services").and_then(Node::as_map_mut) {
        for (_, service) in services.entries.iter_mut() {
            resolve_service(service, base, home);
        }
    }
    // A local volume with `o: bind` is a bind mount of `device` (compose-go volumeDriverOpts);
    // the driver must be written as `local`.
    if let Some(volumes) = map.get_mut("volumes").and_then(Node::as_map_mut) {
        for (_, volume) in volumes.entries.iter_mut() {
            let Some(vm) = volume.as_map_mut() else { continue };
            if vm.get("driver").and_then(Node::as_str) != Some("local") {
                continue;
            }
            let Some(opts) = vm.get_mut("driver_opts").and_then(Node::as_map_mut) else { continue };
            if opts.get("o").and_then(Node::as_str) == Some("bind") {
                fix(opts.get_mut("device"), base, home);
            }
        }
    }
    for kind in ["secrets", "configs"] {
        if let Some(items) = map.get_mut(kind).and_then(Node::as_map_mut) {
            for (_, item) in items.entries.iter_mut() {
                fix(item.as_map_mut().and_then(|m| m.get_mut("file")), base, home);
            }
        }
    }
    if let Some(includes) = map.get_mut("include").and_then(Node::as_seq_mut) {
        for include in includes.iter_mut() {
            let Some(inc) = include.as_map_mut() else { continue };
            for key in ["path", "env_file"] {
                match inc.get_mut(key) {
                    Some(Node { value: Value::Seq(items), .. }) => {
                        items.iter_mut().for_each(|n| fix(Some(n), base, home))
                    }
                    other => fix(other, base, home),
                }
            }
            fix(inc.get_mut("project_directory"), base, home);
        }
    }
}

fn resolve_service(service: &mut Node, base: &Path, home: Option<&str>) {
    let Some(svc) = service.as_map_mut() else { return };
    if let Some(build) = svc.get_mut("build").and_then(Node::as_map_mut) {
        let remote = build.get("context").and_then(Node::as_str).is_some_and(is_remote_context);
        if !remote {
            match build.get_mut("context") {
                Some(ctx) => fix(Some(ctx), base, home),
                None => {
                    let mark = build.entries.first().map(|(k, _)| k.mark.clone()).unwrap_or_default();
                    let ctx = base.to_string_lossy().into_owned();
                    build.insert(
                        super::node::Key { name: "context".into(), mark: mark.clone() },
                        Node::str(ctx, &mark),
                    );
                }
            }
        }
        if let Some(extra) = build.get_mut("additional_contexts").and_then(Node::as_map_mut) {
            for (_, v) in extra.entries.iter_mut() {
                let keep = v.as_str().is_some_and(|s| is_remote_context(s) || s.contains(':'));
                if !keep {
                    fix(Some(v), base, home);
                }
            }
        }
    }
    if let Some(files) = svc.get_mut("env_file").and_then(Node::as_seq_mut) {
        for f in files.iter_mut() {
            fix(f.as_map_mut().and_then(|m| m.get_mut("path")), base, home);
        }
    }
    if let Some(files) = svc.get_mut("label_file").and_then(Node::as_seq_mut) {
        files.iter_mut().for_each(|f| fix(Some(f), base, home));
    }
    if let Some(volumes) = svc.get_mut("volumes").and_then(Node::as_seq_mut) {
        for v in volumes.iter_mut() {
            let Some(vm) = v.as_map_mut() else { continue };
            if vm.get("type").and_then(Node::as_str) == Some("bind") {
                fix(vm.get_mut("source"), base, home);
            }
        }
    }
    if let Some(ext) = svc.get_mut("extends").and_then(Node::as_map_mut) {
        fix(ext.get_mut("file"), base, home);
    }
    if let Some(watch) = svc
        .get_mut("develop")
        .and_then(Node::as_map_mut)
        .and_then(|d| d.get_mut("watch"))
        .and_then(Node::as_seq_mut)
    {
        for w in watch.iter_mut() {
            fix(w.as_map_mut().and_then(|m| m.get_mut("path")), base, home);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_lexical() {
        assert_eq!(clean(Path::new("/a/./b/../c/")), PathBuf::from("/a/c"));
        assert_eq!(clean(Path::new("/..")), PathBuf::from("/"));
        assert_eq!(clean(Path::new("a/../..")), PathBuf::from(".."));
    }

    #[test]
    fn local_bind_volume_device_is_made_absolute() {
        let text = "volumes: {a: {driver: local, driver_opts: {o: bind, device: ./d}}, b: {driver_opts: {o: bind, device: ./d}}, c: {driver: local, driver_opts: {o: 'addr=x', device: ':/e'}}}";
        let mut tree = crate::compose::yaml::parse(text, &std::sync::Arc::from("c.yaml")).expect("yaml");
        resolve(&mut tree, Path::new("/proj"), None);
        let v = tree.to_json();
        assert_eq!(v["volumes"]["a"]["driver_opts"]["device"], "/proj/d");
        assert_eq!(v["volumes"]["b"]["driver_opts"]["device"], "./d");
        assert_eq!(v["volumes"]["c"]["driver_opts"]["device"], ":/e");
    }

    #[test]
    fn absolute_expands_home_and_joins() {
        let base = Path::new("/proj");
        assert_eq!(absolute(base, "./logs/../logs2", None), "/proj/logs2");
        assert_eq!(absolute(base, "/abs/path", None), "/abs/path");
        assert_eq!(absolute(base, "~/configs", Some("/root")), "/root/configs");
        assert_eq!(absolute(base, "~user/x", Some("/root")), "/proj/~user/x");
        assert_eq!(absolute(base, ".", None), "/proj");
    }
}
