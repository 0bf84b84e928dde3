//! berth's folders are closed to other local users (as docker's `/var/lib/docker` is): a user
//! who is not root can neither list nor read a volume's data or a container's upper layer,
//! while a container running as a user who is not root still reaches its root and volumes.

mod stack;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stack::Stack;

const COMPOSE: &str = r#"
services:
  writer:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo vol-secret > /data/secret; echo upper-secret > /upper-secret; sleep 1000"]
    volumes: [data:/data]
    init: true
  reader:
    image: berth-test/busybox:latest
    user: "65534:65534"
    command: ["sh", "-c", "until [ -f /data/secret ]; do sleep 0.1; done; id -u; cat /data/secret; ls /bin/busybox; sleep 1000"]
    volumes: [data:/data]
    init: true
volumes:
  data:
networks:
  default:
    ipam:
      config:
        - subnet: 10.239.77.0/24
"#;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// Runs `program ARGS` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(program: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new(program).args(args).uid(65534).gid(65534).output().expect("run as nobody");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The upper layer of the container whose upper layer holds `file`.
fn upper_with(root: &Path, file: &str) -> PathBuf {
    std::fs::read_dir(root.join("containers"))
        .expect("containers")
        .flatten()
        .map(|e| e.path().join("upper"))
        .find(|upper| upper.join(file).is_file())
        .expect("a container wrote the file")
}

#[test]
fn other_users_cannot_read_volumes_or_upper_layers_yet_non_root_containers_work() {
    let stack = Stack::new("privdirs", COMPOSE);
    // The test's own temp dir is closed; open it so that only berth's modes stand in the way.
    std::fs::set_permissions(stack.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    stack.ok(&["up", "-d"]);
    let (root, run) = (stack.root(), stack.run_dir());

    // The container running as nobody reads the volume and its root through its mounts.
    let mut log = String::new();
    for _ in 0..100 {
        log = stack.ok(&["logs", "--no-color", "--no-log-prefix", "reader"]).stdout;
        if log.contains("/bin/busybox") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(log, "65534\nvol-secret\n/bin/busybox\n");
    let exec = stack.exec("reader", &["sh", "-c", "id -u; cat /data/secret"]);
    assert!(exec.ok, "{}", exec.stderr);
    assert_eq!(exec.stdout, "65534\nvol-secret\n");

    // Root sees the files, so the refusals below are about permissions, not missing paths.
    let data = root.join("volumes/privdirs_data/_data");
    assert_eq!(std::fs::read_to_string(data.join("secret")).unwrap(), "vol-secret\n");
    let upper = upper_with(&root, "upper-secret");
    for (path, expected) in [
        (root.clone(), 0o710),
        (root.join("containers"), 0o710),
        (upper.parent().unwrap().to_path_buf(), 0o710),
        (root.join("volumes"), 0o701),
        (root.join("volumes/privdirs_data"), 0o701),
        (root.join("images"), 0o700),
        (root.join("networks"), 0o700),
        (root.join("projects"), 0o700),
        (run.clone(), 0o710),
        (run.join("containers"), 0o710),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }

    for (program, path) in [
        ("ls", root.clone()),
        ("ls", run.clone()),
        ("ls", root.join("volumes")),
        ("ls", data.clone()),
        ("cat", data.join("secret")),
        ("ls", root.join("containers")),
        ("ls", upper.clone()),
        ("cat", upper.join("upper-secret")),
        ("ls", root.join("images/layers")),
        ("ls", run.join("containers")),
    ] {
        let (ok, err) = as_nobody(program, &[&path]);
        assert!(!ok && err.contains("Permission denied"), "nobody ran {program} {}: {err}", path.display());
    }
    // The test's own folder is open to nobody: the refusals are berth's doing.
    let (ok, err) = as_nobody("ls", &[&stack.project_dir]);
    assert!(ok, "{err}");
}

#[test]
fn an_existing_open_root_is_closed_when_a_command_starts() {
    let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
    let root = dir.path().join("root");
    // A root as an earlier berth left it: everything 0755.
    for sub in ["", "containers", "volumes/v/_data", "images"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["network", "ls", "-q"])
        .env("BERTH_ROOT", &root)
        .env("BERTH_RUN", dir.path().join("run"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        [
            mode(&root),
            mode(&root.join("containers")),
            mode(&root.join("volumes")),
            mode(&root.join("images"))
        ],
        [0o710, 0o710, 0o701, 0o700]
    );
    // A volume's data keeps its own mode.
    assert_eq!(mode(&root.join("volumes/v/_data")), 0o755);
}
