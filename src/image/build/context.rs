//! What COPY and ADD read and how they write it: sources picked from a root (the build
//! context, a named context, or another stage's file system) by path or glob, filtered by
//! `.dockerignore` and `--exclude`, hashed for the cache (content and metadata, never mtimes),
//! and copied with docker's rules into the tree of the layer being made.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Which paths of a root are left out (`.dockerignore`, `--exclude`).
pub trait Filter {
    /// Whether `rel` (relative to the root, `/`-separated, no leading `/`) is left out.
    fn excluded(&self, rel: &str, is_dir: bool) -> bool;
}

/// Leaves nothing out.
pub struct NoFilter;

impl Filter for NoFilter {
    fn excluded(&self, _rel: &str, _is_dir: bool) -> bool {
        false
    }
}

/// Patterns (Go's `filepath.Match` per path component, plus `**` for any number of dirs) that
/// leave out what they match, or what is under a match.
pub struct Excludes(pub Vec<String>);

impl Filter for Excludes {
    fn excluded(&self, rel: &str, _is_dir: bool) -> bool {
        self.0.iter().any(|p| {
            let p = p.trim_start_matches('/');
            path_match(p, rel) || {
                // Under an excluded dir.
                let parts: Vec<&str> = rel.split('/').collect();
                (1..parts.len()).any(|n| path_match(p, &parts[..n].join("/")))
            }
        })
    }
}

/// Two filters at once.
pub struct Both<'a>(pub &'a dyn Filter, pub &'a dyn Filter);

impl Filter for Both<'_> {
    fn excluded(&self, rel: &str, is_dir: bool) -> bool {
        self.0.excluded(rel, is_dir) || self.1.excluded(rel, is_dir)
    }
}

/// Go's `filepath.Match` for one component: `*`, `?`, `[...]` (with `^`/`!` negation and
/// ranges), `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|k| glob_at(&p[1..], &n[k..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            let mut i = 1;
            let negate = matches!(p.get(1), Some('^') | Some('!'));
            if negate {
                i += 1;
            }
            let mut hit = false;
            let mut first = true;
            while i < p.len() && (first || p[i] != ']') {
                first = false;
                let lo = if p[i] == '\\' && i + 1 < p.len() {
                    i += 1;
                    p[i]
                } else {
                    p[i]
                };
                if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                    let hi = p[i + 2];
                    hit |= lo <= *c && *c <= hi;
                    i += 3;
                } else {
                    hit |= lo == *c;
                    i += 1;
                }
            }
            if i >= p.len() {
                return false;
            }
            hit != negate && glob_at(&p[i + 1..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && glob_at(&p[1..], &n[1..]),
    }
}

/// Matches a `/`-separated pattern against a `/`-separated path, component by component;
/// `**` matches any number of components.
pub fn path_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let n: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    fn rec(p: &[&str], n: &[&str]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(&"**") => (0..=n.len()).any(|k| rec(&p[1..], &n[k..])),
            Some(pc) => !n.is_empty() && glob_match(pc, n[0]) && rec(&p[1..], &n[1..]),
        }
    }
    rec(&p, &n)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A source path that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The path climbs out of its root.
    #[error("{0:?} is outside the build context")]
    Outside(String),
    /// Nothing matches.
    #[error("{0:?}: not found (or excluded by .dockerignore)")]
    NotFound(String),
    /// Reading failed.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        message: String,
    },
}

fn io_src(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |e| SourceError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// `src` as a path relative to its root, `..` resolved lexically; refused when it climbs out.
pub fn clean_rel(src: &str) -> Result<PathBuf, SourceError> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return Err(SourceError::Outside(src.to_string())),
            _ => {}
        }
    }
    Ok(out)
}

/// `rel` resolved inside `root` as if `root` were `/` (the runtime's `secure_join`): symlinks
/// in its parents, and in its last component when `follow_last`, are followed within `root`, so
/// that joining the result to `root` never leaves it, whatever links a context, stage or image
/// holds (BuildKit resolves the same way). Returned relative to `root`.
pub fn resolve_in_root(root: &Path, rel: &Path, follow_last: bool) -> Result<PathBuf, SourceError> {
    let resolve = |p: &Path| {
        crate::runtime::rootfs::secure_join(root, p)
            .map(|full| full.strip_prefix(root).map(Path::to_path_buf).unwrap_or_default())
            .map_err(|e| SourceError::Io { path: rel.display().to_string(), message: e.to_string() })
    };
    match (follow_last, rel.file_name()) {
        (false, Some(name)) => Ok(resolve(rel.parent().unwrap_or(Path::new("")))?.join(name)),
        _ => resolve(rel),
    }
}

fn rel_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The paths (relative to `root`) that source `src` names: itself, or what its glob matches,
/// sorted. Excluded paths don't match; a source that matches nothing is an error.
pub fn resolve_sources(root: &Path, src: &str, filter: &dyn Filter) -> Result<Vec<PathBuf>, SourceError> {
    let rel = clean_rel(src)?;
    if !has_glob(&rel_str(&rel)) {
        let rel = resolve_in_root(root, &rel, false)?;
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full).map_err(|_| SourceError::NotFound(src.to_string()))?;
        // The root itself is never excluded (the context as a whole).
        if !rel.as_os_str().is_empty() && filter.excluded(&rel_str(&rel), meta.is_dir()) && !meta.is_dir() {
            return Err(SourceError::NotFound(src.to_string()));
        }
        return Ok(vec![rel]);
    }
    let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let mut found = vec![PathBuf::new()];
    for part in &parts {
        let mut next = Vec::new();
        for base in &found {
            if has_glob(part) {
                let Ok(rd) = fs::read_dir(root.join(resolve_in_root(root, base, true)?)) else { continue };
                let mut names: Vec<String> =
                    rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                for n in names.into_iter().filter(|n| glob_match(part, n)) {
                    next.push(base.join(n));
                }
            } else if fs::symlink_metadata(root.join(resolve_in_root(root, &base.join(part), false)?)).is_ok()
            {
                next.push(base.join(part));
            }
        }
        found = next;
    }
    let found: Vec<PathBuf> =
        found.iter().map(|p| resolve_in_root(root, p, false)).collect::<Result<_, _>>()?;
    let mut found = found;
    found.retain(|p| {
        let is_dir = fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir());
        is_dir || !filter.excluded(&rel_str(p), false)
    });
    if found.is_empty() {
        return Err(SourceError::NotFound(src.to_string()));
    }
    Ok(found)
}

/// Adds what COPY would read at `root/rel` (recursively) to `hasher`: names, types, modes,
/// owners, link targets, xattrs and file contents; not times.
pub fn hash_source(
    root: &Path,
    rel: &Path,
    filter: &dyn Filter,
    hasher: &mut Sha256,
) -> Result<(), SourceError> {
    let full = root.join(rel);
    let meta = fs::symlink_metadata(&full).map_err(io_src(&full))?;
    let name = rel_str(rel);
    if !name.is_empty() && filter.excluded(&name, meta.is_dir()) && !meta.is_dir() {
        return Ok(());
    }
    hasher.update(format!("{name}\0{:o}\0{}\0{}\0", meta.mode(), meta.uid(), meta.gid()).as_bytes());
    if let Ok(names) = xattr::list(&full) {
        let mut names: Vec<_> = names.collect();
        names.sort();
        for n in names {
            if let Ok(Some(v)) = xattr::get(&full, &n) {
                hasher.update(n.as_encoded_bytes());
                hasher.update(&v);
            }
        }
    }
    let ft = meta.file_type();
    if ft.is_symlink() {
        hasher.update(fs::read_link(&full).map_err(io_src(&full))?.as_os_str().as_encoded_bytes());
    } else if ft.is_file() {
        let mut f = fs::File::open(&full).map_err(io_src(&full))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io_src(&full))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    } else if ft.is_dir() {
        let mut names: Vec<_> =
            fs::read_dir(&full).map_err(io_src(&full))?.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            hash_source(root, &rel.join(n), filter, hasher)?;
        }
    } else {
        hasher.update(meta.rdev().to_le_bytes());
    }
    hasher.update(b"\n");
    Ok(())
}

/// Owner and mode changes COPY applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyAttrs {
    /// `--chown` resolved to numbers.
    pub owner: Option<(u32, u32)>,
    /// `--chmod` as a mode.
    pub mode: Option<u32>,
}

fn set_meta(path: &Path, meta: &fs::Metadata, attrs: CopyAttrs) -> io::Result<()> {
    let (uid, gid) = attrs.owner.unwrap_or((meta.uid(), meta.gid()));
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if !meta.file_type().is_symlink() {
        // --chmod applies to files and dirs alike in BuildKit.
        let mode = attrs.mode.unwrap_or(meta.mode() & 0o7777);
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    let atime = nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

fn copy_xattrs(from: &Path, to: &Path) {
    if let Ok(names) = xattr::list(from) {
        for n in names {
            let name = n.to_string_lossy();
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(from, &n) {
                let _ = xattr::set(to, &n, &v);
            }
        }
    }
}

/// Copies `src` (file, symlink, device, FIFO or dir with its contents, filtered; a socket
/// becomes an empty file, as in BuildKit) to `dest`, which
/// must not exist unless both are dirs (then the contents merge). Modes, owners, times and
/// xattrs are kept unless `attrs` says otherwise. `rel` is `src` relative to its root (for the
/// filter).
pub fn copy_tree(
    src: &Path,
    rel: &Path,
    dest: &Path,
    attrs: CopyAttrs,
    filter: &dyn Filter,
) -> io::Result<bool> {
    let meta = fs::symlink_metadata(src)?;
    let name = rel_str(rel);
    let ft = meta.file_type();
    if ft.is_dir() {
        let mut copied_any = false;
        let existed = dest.is_dir() && !fs::symlink_metadata(dest)?.file_type().is_symlink();
        if !existed {
            if fs::symlink_metadata(dest).is_ok() {
                remove_any(dest)?;
            }
            fs::create_dir(dest)?;
        }
        let mut names: Vec<_> = fs::read_dir(src)?.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            copied_any |= copy_tree(&src.join(&n), &rel.join(&n), &dest.join(&n), attrs, filter)?;
        }
        let excluded = !name.is_empty() && filter.excluded(&name, true);
        if excluded && !copied_any && !existed {
            fs::remove_dir(dest)?;
            return Ok(false);
        }
        copy_xattrs(src, dest);
        set_meta(dest, &meta, attrs)?;
        return Ok(true);
    }
    if !name.is_empty() && filter.excluded(&name, false) {
        return Ok(false);
    }
    if fs::symlink_metadata(dest).is_ok() {
        remove_any(dest)?;
    }
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)?;
    } else if ft.is_file() {
        fs::copy(src, dest)?;
    } else if ft.is_socket() {
        // BuildKit sends a socket of the context as a plain file without content (fsutil
        // clears the socket bit): an empty file with its mode and owner.
        fs::File::create(dest)?;
    } else {
        let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
        nix::sys::stat::mknod(
            dest,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(io::Error::from)?;
    }
    copy_xattrs(src, dest);
    set_meta(dest, &meta, attrs)?;
    Ok(true)
}

fn remove_any(p: &Path) -> io::Result<()> {
    if fs::symlink_metadata(p)?.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) }
}

/// Makes dir `rel` in `tree` with its missing parents. A dir that exists in the stage's file
/// system (`view`) keeps its mode, owner and time there; a new one is 0755, owned by `owner`
/// (root unless `--chown`). Returns the paths it created that `view` lacks.
pub fn mkdir_tree(
    tree: &Path,
    view: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
) -> io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    let mut cur = PathBuf::new();
    for c in rel.components() {
        let Component::Normal(n) = c else { continue };
        cur.push(n);
        let t = tree.join(&cur);
        if fs::symlink_metadata(&t).is_ok() {
            continue;
        }
        fs::create_dir(&t)?;
        match fs::symlink_metadata(view.join(&cur)) {
            Ok(m) if m.is_dir() => {
                set_meta(&t, &m, CopyAttrs::default())?;
            }
            _ => {
                let (uid, gid) = owner.unwrap_or((0, 0));
                std::os::unix::fs::lchown(&t, Some(uid), Some(gid))?;
                fs::set_permissions(&t, fs::Permissions::from_mode(0o755))?;
                made.push(cur.clone());
            }
        }
    }
    Ok(made)
}

/// Sets times of the dirs of `tree` that mirror existing ones of `view` back to `view`'s (a
/// copy into them changed their times), so that a layer says nothing new about them.
pub fn restore_dir_times(tree: &Path, view: &Path, rel: &Path) {
    let mut cur = PathBuf::new();
    let mut dirs = Vec::new();
    for c in rel.components() {
        if let Component::Normal(n) = c {
            cur.push(n);
            dirs.push(cur.clone());
        }
    }
    for d in dirs.into_iter().rev() {
        if let (Ok(m), true) = (fs::symlink_metadata(view.join(&d)), tree.join(&d).is_dir())
            && m.is_dir()
        {
            let _ = set_meta(&tree.join(&d), &m, CopyAttrs::default());
        }
    }
}

/// `--chmod`: octal (`0755`, `755`) or symbolic (`u+x,go=r`, applied to 0644 files, as
/// BuildKit applies it to each file's mode; here to a base of 0644).
pub fn parse_chmod(s: &str) -> Option<u32> {
    if !s.is_empty() && s.chars().all(|c| c.is_digit(8)) {
        return u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777);
    }
    let mut mode: u32 = 0o644;
    for clause in s.split(',') {
        let op_at = clause.find(['+', '-', '='])?;
        let (who, rest) = clause.split_at(op_at);
        let (op, perms) = rest.split_at(1);
        let who_mask = if who.is_empty() || who.contains('a') {
            0o777
        } else {
            let mut m = 0;
            for w in who.chars() {
                m |= match w {
                    'u' => 0o700,
                    'g' => 0o070,
                    'o' => 0o007,
                    _ => return None,
                };
            }
            m
        };
        let mut bits = 0;
        for p in perms.chars() {
            bits |= match p {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                _ => return None,
            };
        }
        let bits = bits & who_mask;
        match op {
            "+" => mode |= bits,
            "-" => mode &= !bits,
            _ => mode = (mode & !who_mask) | bits,
        }
    }
    Some(mode)
}

/// Looks `name` up in a passwd- or group-style file's text: its id (third field).
pub fn lookup_id(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}

/// A `--chown` name the stage does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// No such user in the stage's `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    User(String),
    /// No such group in the stage's `/etc/group`.
    #[error("unable to find group {0}: no matching entries in group file")]
    Group(String),
}

/// `user[:group]` of `--chown` to numbers, names looked up in the stage's `/etc/passwd` and
/// `/etc/group` (under `view`). A user alone means its primary group... as BuildKit: the
/// user's own id when the user is numeric, else the passwd entry's group.
pub fn resolve_owner(spec: &str, view: &Path) -> Result<(u32, u32), OwnerError> {
    let passwd = fs::read_to_string(view.join("etc/passwd")).unwrap_or_default();
    let group = fs::read_to_string(view.join("etc/group")).unwrap_or_default();
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup_id(&passwd, user)
            .ok_or_else(|| OwnerError::User(user.to_string()))?,
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_id(&group, g)
                .ok_or_else(|| OwnerError::Group(g.to_string()))?,
        },
        None if user.parse::<u32>().is_ok() => uid,
        None => passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&user)).then(|| f.get(3)?.parse().ok()).flatten()
            })
            .unwrap_or(uid),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_rules() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(path_match("**/*.go", "a/b/c.go"));
        assert!(path_match("src/*", "src/x"));
        assert!(!path_match("src/*", "src/x/y"));
    }

    #[test]
    fn sources_resolve_inside_the_root() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("src/sub")).unwrap();
        for f in ["a.txt", "b.txt", "c.md", "src/sub/x"] {
            fs::write(r.join(f), f).unwrap();
        }
        assert_eq!(
            resolve_sources(r, "*.txt", &NoFilter).unwrap(),
            [PathBuf::from("a.txt"), PathBuf::from("b.txt")]
        );
        assert_eq!(resolve_sources(r, "/src/../c.md", &NoFilter).unwrap(), [PathBuf::from("c.md")]);
        assert!(matches!(resolve_sources(r, "../etc/passwd", &NoFilter), Err(SourceError::Outside(_))));
        // A symlink never leads out of the root: an absolute target starts again at the root.
        std::os::unix::fs::symlink("/etc", r.join("hostetc")).unwrap();
        assert!(matches!(resolve_sources(r, "hostetc/hostname", &NoFilter), Err(SourceError::NotFound(_))));
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        assert!(matches!(resolve_sources(r, "up/hostname", &NoFilter), Err(SourceError::NotFound(_))));
        assert_eq!(resolve_in_root(r, Path::new("up/x"), true).unwrap(), PathBuf::from("etc/x"));
        assert!(matches!(resolve_sources(r, "nope", &NoFilter), Err(SourceError::NotFound(_))));
        let ex = Excludes(vec!["b.txt".into()]);
        assert_eq!(resolve_sources(r, "*.txt", &ex).unwrap(), [PathBuf::from("a.txt")]);
        assert!(resolve_sources(r, "b.txt", &ex).is_err());
        let ex = Excludes(vec!["src/sub".into()]);
        assert!(ex.excluded("src/sub/x", false));
    }

    #[test]
    fn copy_keeps_metadata_and_filters() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("d/skip")).unwrap();
        fs::write(src.join("d/f"), b"x").unwrap();
        fs::write(src.join("d/skip/g"), b"x").unwrap();
        fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::symlink("f", src.join("d/l")).unwrap();
        fs::create_dir(&dst).unwrap();
        let ex = Excludes(vec!["d/skip".into()]);
        copy_tree(
            &src.join("d"),
            Path::new("d"),
            &dst.join("d"),
            CopyAttrs { owner: Some((7, 8)), mode: None },
            &ex,
        )
        .unwrap();
        let m = fs::metadata(dst.join("d/f")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o751, 7, 8));
        assert_eq!(m.mtime(), fs::metadata(src.join("d/f")).unwrap().mtime());
        assert_eq!(fs::read_link(dst.join("d/l")).unwrap(), Path::new("f"));
        assert!(!dst.join("d/skip").exists());
    }

    #[test]
    fn hash_ignores_times_only() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let r = dir.path();
        fs::write(r.join("f"), b"one").unwrap();
        let h = || {
            let mut s = Sha256::new();
            hash_source(r, Path::new("f"), &NoFilter, &mut s).unwrap();
            hex::encode(s.finalize())
        };
        let first = h();
        let t = nix::sys::time::TimeSpec::new(1000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &r.join("f"),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        assert_eq!(h(), first);
        fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(h(), first);
    }

    #[test]
    fn chmod_and_owner_lookup() {
        assert_eq!(parse_chmod("0755"), Some(0o755));
        assert_eq!(parse_chmod("u+x"), Some(0o744));
        assert_eq!(parse_chmod("a=r"), Some(0o444));
        assert_eq!(parse_chmod("9"), None);
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        fs::write(dir.path().join("etc/group"), "staff:x:50:\n").unwrap();
        assert_eq!(resolve_owner("app", dir.path()), Ok((1000, 1001)));
        assert_eq!(resolve_owner("app:staff", dir.path()), Ok((1000, 50)));
        assert_eq!(resolve_owner("5", dir.path()), Ok((5, 5)));
        assert!(resolve_owner("nobody", dir.path()).is_err());
    }
}
