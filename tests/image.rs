//! The image store through the CLI, and its images run by the runtime.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use berth::image::ImageStore;
use sha2::{Digest, Sha256};

fn berth(env: &common::TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(&env.dirs.root)
        .arg("--run")
        .arg(&env.dirs.run)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar of (path, contents or symlink/hardlink target, kind).
fn tar_of(entries: &[(&str, &str, tar::EntryType)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, kind) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_size(0);
                h.set_link_name(data).unwrap();
                let name = h.as_old_mut().name.as_mut();
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                let name = h.as_old_mut().name.as_mut();
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn busybox_layer(env: &common::TestEnv) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &env.layer).unwrap();
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A layer as stored (maybe compressed) and as its plain tar.
type Layer = (Vec<u8>, Vec<u8>);

/// A docker-archive of (repo tag, layers).
fn docker_archive(images: &[(&str, Vec<Layer>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    for (i, (tag, layers)) in images.iter().enumerate() {
        let diff_ids: Vec<String> = layers.iter().map(|(_, plain)| sha(plain)).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": { "Cmd": ["sh"], "Env": ["PATH=/bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_name = format!("{}.json", sha(&config).trim_start_matches("sha256:"));
        add(&mut b, &config_name, &config);
        let mut names = Vec::new();
        for (j, (stored, _)) in layers.iter().enumerate() {
            let name = format!("img{i}layer{j}/layer.tar");
            add(&mut b, &name, stored);
            names.push(name);
        }
        manifest.push(serde_json::json!({ "Config": config_name, "RepoTags": [tag], "Layers": names }));
    }
    add(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

fn store_is_empty(env: &common::TestEnv) -> bool {
    let count = |p: &Path| fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let images = env.dirs.images();
    count(&images.join("blobs/sha256")) == 0 && count(&images.join("layers")) == 0
}

#[test]
fn import_a_folder_with_changes_and_run_it() {
    let env = common::TestEnv::new();
    let layer = env.layer.display().to_string();
    let (ok, out, err) = berth(
        &env,
        &[
            "image",
            "import",
            "-c",
            "CMD [\"echo\", \"from-cmd\"]",
            "-c",
            "ENV GREETING=hi",
            "-c",
            "WORKDIR /tmp",
            &layer,
            "test/box:1",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.trim().starts_with("sha256:"));
    let (_, ls, _) = berth(&env, &["image", "ls"]);
    assert!(ls.contains("test/box") && ls.contains(" 1 "), "{ls}");
    let (_, inspect, _) = berth(&env, &["image", "inspect", "test/box:1"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["echo", "from-cmd"]));
    assert_eq!(v[0]["Config"]["WorkingDir"], "/tmp");

    let store = ImageStore::open(&env.dirs).unwrap();
    let image = store.resolve("test/box:1").unwrap();
    let mut spec = env.spec("imported", &[]);
    let c = image.config.config().clone().unwrap_or_default();
    spec.rootfs.lower_dirs = image.layer_dirs.clone();
    spec.image_id = Some(image.id.clone());
    spec.process.args = vec!["sh".into(), "-c".into(), "echo $GREETING $(pwd)".into()];
    spec.process.env = c.env().clone().unwrap_or_default();
    spec.process.cwd = c.working_dir().clone().unwrap_or_default();
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert_eq!(log, "hi /tmp\n");

    // In use: refused without -f.
    let (ok, _, err) = berth(&env, &["image", "rm", "test/box:1"]);
    assert!(!ok && err.contains("is used by container imported"), "{err}");
    // Forced: the image goes, but the layer the container's rootfs lists stays until the
    // container goes.
    let (ok, out, err) = berth(&env, &["image", "rm", "--force", "test/box:1"]);
    assert!(ok, "{err}");
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(spec.rootfs.lower_dirs.iter().all(|d| d.join("bin/busybox").exists()), "layer kept");
    let (_, ls, _) = berth(&env, &["image", "ls", "-q"]);
    assert_eq!(ls.trim(), "", "the image itself is gone");
    env.runtime.remove(&spec.id, true).unwrap();
    let (ok, _, err) = berth(&env, &["image", "prune"]);
    assert!(ok, "{err}");
    assert!(store_is_empty(&env), "with the container gone, nothing of the image is left");
}

#[test]
fn load_docker_archive_with_whiteouts_hard_links_gzip_and_zstd() {
    let env = common::TestEnv::new();
    use tar::EntryType::*;
    let base = busybox_layer(&env);
    let data = tar_of(&[
        ("data/", "", Directory),
        ("data/old.txt", "old", Regular),
        ("data/keep.txt", "keep", Regular),
        ("opq/", "", Directory),
        ("opq/a.txt", "a", Regular),
        ("h/", "", Directory),
        ("h/one", "linked", Regular),
        ("h/two", "h/one", Link),
    ]);
    let top = tar_of(&[
        ("data/.wh.old.txt", "", Regular),
        ("opq/.wh..wh..opq", "", Regular),
        ("opq/b.txt", "b", Regular),
    ]);
    let extra = tar_of(&[("extra.txt", "zstd layer", Regular)]);
    let archive = docker_archive(&[
        (
            "test/one:latest",
            vec![(base.clone(), base.clone()), (data.clone(), data.clone()), (gzip(&top), top.clone())],
        ),
        (
            "test/two:v2",
            vec![(base.clone(), base.clone()), (zstd::encode_all(&extra[..], 3).unwrap(), extra.clone())],
        ),
    ]);
    let path = env.dir.path().join("images.tar");
    fs::write(&path, &archive).unwrap();
    let (ok, out, err) = berth(&env, &["image", "load", "-i", &path.display().to_string()]);
    assert!(ok, "{err}");
    assert_eq!(out, "Loaded image: test/one:latest\nLoaded image: test/two:v2\n");
    // Folders only: each has its completion marker beside it.
    let layers = fs::read_dir(env.dirs.images().join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(layers, 4, "the shared base layer is unpacked once");

    let store = ImageStore::open(&env.dirs).unwrap();
    let image = store.resolve("test/one").unwrap();
    let mut spec = env.spec("layers", &["sh", "-c", "ls /data; ls /opq; ls -i /h | sort -u -k1,1 | wc -l"]);
    spec.rootfs.lower_dirs = image.layer_dirs;
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert_eq!(
        log, "keep.txt\nb.txt\n1\n",
        "whiteout hides old.txt, the opaque dir hides a.txt, h/one and h/two share an inode"
    );
    let two = store.resolve("test/two:v2").unwrap();
    let mut spec = env.spec("zstd", &["cat", "/extra.txt"]);
    spec.rootfs.lower_dirs = two.layer_dirs;
    let (_, log) = env.run_to_end(&spec);
    assert_eq!(log, "zstd layer");
}

#[test]
fn bad_archives_store_nothing() {
    let env = common::TestEnv::new();
    use tar::EntryType::*;
    let escape = tar_of(&[("../../evil", "x", Regular)]);
    let through = tar_of(&[("link", "/tmp", Symlink), ("link/evil", "x", Regular)]);
    for (what, layer) in [("..", escape), ("symlink", through)] {
        let archive = docker_archive(&[("test/bad:latest", vec![(layer.clone(), layer)])]);
        let path = env.dir.path().join("bad.tar");
        fs::write(&path, &archive).unwrap();
        let (ok, _, err) = berth(&env, &["image", "load", "-i", &path.display().to_string()]);
        assert!(!ok, "{what}: refused");
        assert!(err.contains("escapes the layer") && err.contains("bad.tar"), "{what}: {err}");
        assert!(store_is_empty(&env), "{what}: nothing stored");
    }
    assert!(!Path::new("/tmp/evil").exists());

    // A diff id that does not match the layer.
    let layer = tar_of(&[("f", "x", Regular)]);
    let archive = docker_archive(&[("test/bad:latest", vec![(layer, tar_of(&[("g", "y", Regular)]))])]);
    let path = env.dir.path().join("mismatch.tar");
    fs::write(&path, &archive).unwrap();
    let (ok, _, err) = berth(&env, &["image", "load", "-i", &path.display().to_string()]);
    assert!(!ok && err.contains("diff id"), "{err}");
    assert!(store_is_empty(&env));
    let (ok, _, err) = berth(&env, &["image", "load", "-i", "/dev/null"]);
    assert!(!ok && err.contains("not an image archive") && err.contains("empty"), "{err}");
    let (ok, _, err) = berth(&env, &["image", "load", "-i", "/dev/zero"]);
    assert!(!ok && err.contains("/dev/zero") && err.contains("end-of-archive"), "{err}");
}

#[test]
fn prune_removes_untagged_images() {
    let env = common::TestEnv::new();
    let layer = env.layer.display().to_string();
    let (ok, _, err) = berth(&env, &["image", "import", &layer]);
    assert!(ok, "{err}");
    let (_, ls, _) = berth(&env, &["image", "ls", "--format", "json"]);
    // docker's JSON lines: one object per image.
    let v: serde_json::Value = serde_json::from_str(ls.lines().next().unwrap()).unwrap();
    assert_eq!(v["Repository"], "<none>");
    assert_eq!(v["Digest"], "<none>");
    let (ok, out, _) = berth(&env, &["image", "prune"]);
    assert!(ok && out.starts_with("Deleted Images:\ndeleted: sha256:"), "{out}");
    assert!(out.contains("\n\nTotal reclaimed space: "), "{out}");
    assert!(store_is_empty(&env));
}

#[test]
fn ls_filters_inspect_format_and_prune_all() {
    let env = common::TestEnv::new();
    let layer = env.layer.display().to_string();
    let import = |name: &str, label: &str| {
        let (ok, out, err) = berth(
            &env,
            &["image", "import", "-c", &format!("LABEL tier={label}"), "-c", "ENV A=1", &layer, name],
        );
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let old = import("test/old:1", "back");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let new = import("test/new:2", "front");
    let (ok, _, err) = berth(&env, &["image", "tag", "test/new:2", "other/new:3"]);
    assert!(ok, "{err}");
    let (ok, _, err) = berth(&env, &["image", "import", &layer]);
    assert!(ok, "{err}");
    let ls = |args: &[&str]| {
        let mut all = vec!["image", "ls"];
        all.extend_from_slice(args);
        let (ok, out, err) = berth(&env, &all);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let short = |id: &str| id.trim_start_matches("sha256:")[..12].to_string();
    // The table: docker's columns, newest first; -a changes nothing (no intermediates).
    let table = ls(&[]);
    let head = table.lines().next().unwrap();
    assert!(
        head.starts_with("REPOSITORY   TAG") && head.contains("IMAGE ID") && head.contains("CREATED"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 5, "{table}");
    assert_eq!(ls(&["-a"]), table);
    assert!(ls(&["--digests"]).lines().next().unwrap().contains("DIGEST"));
    let fmt = "{{.Repository}}:{{.Tag}}";
    let lines = |args: &[&str]| -> Vec<String> {
        let mut a = args.to_vec();
        a.extend(["--format", fmt]);
        let mut v: Vec<String> = ls(&a).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(lines(&["-f", "dangling=true"]), vec!["<none>:<none>"]);
    assert_eq!(lines(&["--filter", "dangling=false"]).len(), 3);
    assert_eq!(lines(&["-f", "reference=test/*"]), vec!["test/new:2", "test/old:1"]);
    assert_eq!(lines(&["-f", "reference=*/new:3"]), vec!["other/new:3"]);
    assert_eq!(lines(&["test/old"]), vec!["test/old:1"]);
    assert_eq!(lines(&["-f", "label=tier=front"]), vec!["other/new:3", "test/new:2"]);
    assert_eq!(lines(&["-f", "label=tier", "-f", "reference=test/*"]).len(), 2);
    assert_eq!(lines(&["-f", "before=test/new:2", "-f", "dangling=false"]), vec!["test/old:1"]);
    assert_eq!(
        lines(&["-f", "since=test/old:1", "-f", "reference=*/new*"]),
        vec!["other/new:3", "test/new:2"]
    );
    let table = ls(&["--format", "table {{.ID}}\t{{.Tag}}", "-f", "reference=test/old"]);
    assert_eq!(table, format!("IMAGE ID       TAG\n{}   1\n", short(&old)));
    for bad in ["nope=1", "dangling=maybe", "before=missing:1"] {
        let (ok, _, err) = berth(&env, &["image", "ls", "-f", bad]);
        assert!(!ok && err.contains("invalid filter"), "{bad}: {err}");
    }

    // inspect -f: docker's Go templates.
    let (ok, out, err) = berth(&env, &["image", "inspect", "-f", "{{.Id}} {{.RepoTags}}", "test/new:2"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{new} [test/new:2 other/new:3]\n"));
    let (ok, out, _) = berth(
        &env,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}|{{.Config.Env}}",
            "test/old:1",
            "test/new:2",
        ],
    );
    assert!(ok);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![r#"{"tier":"back"}|[A=1]"#, r#"{"tier":"front"}|[A=1]"#]
    );
    let (ok, _, err) = berth(&env, &["image", "inspect", "-f", "{{.Id", "test/new:2"]);
    assert!(!ok && err.contains("template"), "{err}");

    // prune -a: every image no container uses, docker's report.
    let (ok, out, err) = berth(&env, &["image", "prune", "-a", "-f"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    for l in
        ["untagged: test/old:1", "untagged: test/new:2", "untagged: other/new:3", &format!("deleted: {new}")]
    {
        assert!(out.lines().any(|x| x == l), "{l}: {out}");
    }
    assert_eq!(out.matches(&format!("deleted: {new}")).count(), 1, "{out}");
    assert!(store_is_empty(&env));
}

#[test]
fn import_a_folder_keeps_hard_links() {
    use std::os::unix::fs::MetadataExt;
    let env = common::TestEnv::new();
    let folder = tempfile::Builder::new().prefix("berth-import-").tempdir().unwrap();
    fs::create_dir(folder.path().join("d")).unwrap();
    fs::write(folder.path().join("d/a"), b"same").unwrap();
    fs::hard_link(folder.path().join("d/a"), folder.path().join("b")).unwrap();
    let (ok, _, err) = berth(&env, &["image", "import", &folder.path().display().to_string(), "test/links"]);
    assert!(ok, "{err}");
    let image = ImageStore::open(&env.dirs).unwrap().resolve("test/links").unwrap();
    let layer = &image.layer_dirs[0];
    let (a, b) = (fs::metadata(layer.join("d/a")).unwrap(), fs::metadata(layer.join("b")).unwrap());
    assert_eq!(a.ino(), b.ino(), "one inode, as in the folder");
    assert_eq!(fs::read(layer.join("b")).unwrap(), b"same");
    let (ok, _, err) = berth(&env, &["image", "rm", "test/links"]);
    assert!(ok, "{err}");
    assert!(store_is_empty(&env));
}

/// Names in `dir` that interrupted work leaves (`.staging-*`, `.tmp-*`, their locks).
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".staging-") || n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 60 s) until `dir` holds a leftover-style name; false if `child` ended first.
fn wait_for_work_dir(child: &mut std::process::Child, dir: &Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if leftovers(dir).iter().any(|n| !n.ends_with(".lock")) {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
}

fn kill(child: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL);
    let _ = child.wait();
}

#[test]
fn killed_loads_and_unpacks_leave_nothing_the_next_operation_keeps() {
    use std::process::Stdio;
    let env = common::TestEnv::new();
    let layer = env.layer.display().to_string();
    let (ok, _, err) = berth(&env, &["image", "import", &layer, "test/kept:1"]);
    assert!(ok, "{err}");
    let images = env.dirs.images();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(&env.dirs.root)
            .arg("--run")
            .arg(&env.dirs.run)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // 1. `image load` killed half-way through a slow stream: a valid start, then it stalls.
    let big = tar_of(&[("f", &"x".repeat(1 << 20), tar::EntryType::Regular)]);
    let mut load = spawn(&["image", "load"]);
    let mut stdin = load.stdin.take().unwrap();
    stdin.write_all(&big[..big.len() / 2]).unwrap();
    assert!(wait_for_work_dir(&mut load, &images), "the load made its staging dir");
    kill(&mut load);
    drop(stdin);
    assert!(!leftovers(&images).is_empty(), "a killed load leaves its staging dir");

    // The next store operation removes it; the store is as it was.
    let (ok, ls, err) = berth(&env, &["image", "ls"]);
    assert!(ok, "{err}");
    assert!(ls.contains("test/kept"), "{ls}");
    assert_eq!(leftovers(&images), Vec::<String>::new());

    // 2. A layer unpack killed half-way: a layer of many files, imported from a pipe.
    let names: Vec<String> = (0..30000).map(|i| format!("d{}/f{i}", i % 100)).collect();
    let entries: Vec<(&str, &str, tar::EntryType)> =
        names.iter().map(|n| (n.as_str(), "data", tar::EntryType::Regular)).collect();
    let many = tar_of(&entries);
    let mut import = spawn(&["image", "import", "-", "test/killed:1"]);
    let mut stdin = import.stdin.take().unwrap();
    stdin.write_all(&many).unwrap();
    drop(stdin);
    let layers = images.join("layers");
    assert!(wait_for_work_dir(&mut import, &layers), "the import started unpacking");
    kill(&mut import);
    assert!(!leftovers(&layers).is_empty(), "a killed unpack leaves its dir");
    let (ok, ls, err) = berth(&env, &["image", "ls"]);
    assert!(ok, "{err}");
    assert!(ls.contains("test/kept") && !ls.contains("test/killed"), "{ls}");
    assert_eq!(leftovers(&layers), Vec::<String>::new());
    assert_eq!(leftovers(&images), Vec::<String>::new());

    // Consistent: the kept image resolves, prune finds nothing else to keep or lose.
    let store = ImageStore::open(&env.dirs).unwrap();
    let kept = store.resolve("test/kept:1").unwrap();
    assert!(kept.layer_dirs.iter().all(|d| d.join("bin/busybox").exists()));
    let (ok, _, err) = berth(&env, &["image", "prune"]);
    assert!(ok, "{err}");
    let (ok, _, err) = berth(&env, &["image", "rm", "test/kept:1"]);
    assert!(ok, "{err}");
    assert!(store_is_empty(&env), "nothing of the killed work is left");
}
