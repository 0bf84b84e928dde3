//! `berth cp` on real containers (as root, under the shared test lock): both directions, a
//! folder's contents with `/.`, tar streams with `-`, into a stopped container, and symlinks
//! that point out of the container staying inside it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

mod stack;
use stack::Stack;

fn yaml(subnet: &str) -> String {
    format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: {subnet}\n"
    )
}

#[test]
fn cp_both_ways_and_into_a_stopped_container() {
    let stack = Stack::new("wacp1", &yaml("10.245.1.0/24"));
    stack.ok(&["up", "-d"]);
    let host = &stack.project_dir;
    fs::create_dir_all(host.join("tree/sub")).unwrap();
    fs::write(host.join("tree/sub/a.txt"), "alpha").unwrap();
    fs::write(host.join("file.txt"), "one").unwrap();
    fs::set_permissions(host.join("file.txt"), fs::Permissions::from_mode(0o750)).unwrap();

    // Host to container: a file into an existing folder, a tree as a new name, contents with /.
    stack.ok(&["cp", "file.txt", "app:/tmp"]);
    assert_eq!(stack.exec("app", &["cat", "/tmp/file.txt"]).stdout, "one");
    assert_eq!(stack.exec("app", &["stat", "-c", "%a", "/tmp/file.txt"]).stdout.trim(), "750");
    stack.ok(&["cp", "tree", "app:/tmp/copy"]);
    assert_eq!(stack.exec("app", &["cat", "/tmp/copy/sub/a.txt"]).stdout, "alpha");
    stack.ok(&["cp", "tree/.", "app:/tmp"]);
    assert_eq!(stack.exec("app", &["cat", "/tmp/sub/a.txt"]).stdout, "alpha");
    let r = stack.berth(&["cp", "tree", "app:/tmp/file.txt"]);
    assert!(!r.ok && r.stderr.contains("cannot copy a directory to a file"), "{}", r.stderr);

    // A symlink to / in the container is the container's root, not the host's.
    stack.exec("app", &["ln", "-s", "/", "/tmp/escape"]);
    stack.ok(&["cp", "file.txt", "app:/tmp/escape/etc/"]);
    assert_eq!(stack.exec("app", &["cat", "/etc/file.txt"]).stdout, "one");
    assert!(
        !std::path::Path::new("/etc/file.txt").exists()
            || fs::read_to_string("/etc/file.txt").unwrap() != "one"
    );

    // Container to host.
    stack.exec("app", &["sh", "-c", "mkdir -p /data/d && echo made > /data/d/x"]);
    stack.ok(&["cp", "app:/data/d", "out"]);
    assert_eq!(fs::read_to_string(host.join("out/x")).unwrap(), "made\n");
    stack.ok(&["cp", "app:/data/d/x", "out/y"]);
    assert_eq!(fs::read_to_string(host.join("out/y")).unwrap(), "made\n");
    let r = stack.berth(&["cp", "app:/nope", "out"]);
    assert!(!r.ok && r.stderr.contains("/nope"), "{}", r.stderr);

    // Tar streams.
    let out = stack.command(&["cp", "app:/data/d", "-"]).output().unwrap();
    assert!(out.status.success());
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let names: Vec<String> =
        archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.iter().any(|n| n.trim_end_matches('/') == "d/x"), "{names:?}");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "streamed", "stream".as_bytes()).unwrap();
    let bytes = tar.into_inner().unwrap();
    let mut child = stack.command(&["cp", "-", "app:/tmp"]).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(stack.exec("app", &["cat", "/tmp/streamed"]).stdout, "stream");

    // Into and out of a stopped container: the copy is there when it starts again.
    stack.ok(&["stop", "-t", "0"]);
    fs::write(host.join("late.txt"), "late").unwrap();
    stack.ok(&["cp", "late.txt", "app:/tmp/late.txt"]);
    stack.ok(&["cp", "app:/tmp/file.txt", "back.txt"]);
    assert_eq!(fs::read_to_string(host.join("back.txt")).unwrap(), "one");
    stack.ok(&["start"]);
    assert_eq!(stack.exec("app", &["cat", "/tmp/late.txt"]).stdout, "late");

    // Bad arguments.
    let r = stack.berth(&["cp", "a", "b"]);
    assert!(!r.ok && r.stderr.contains("SERVICE:PATH"), "{}", r.stderr);
    let r = stack.berth(&["cp", "nosuch:/x", "b"]);
    assert!(!r.ok && r.stderr.contains("no such service"), "{}", r.stderr);
}

#[test]
fn cp_into_a_stopped_container_writes_into_its_volumes() {
    let yaml = "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\n    tmpfs: [/scratch]\n    volumes: [\"data:/data\", \"./bound:/bound\"]\nvolumes:\n  data: {}\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.243.9.0/24\n";
    let stack = Stack::new("cmcp2", yaml);
    let host = &stack.project_dir;
    fs::create_dir_all(host.join("bound")).unwrap();
    fs::write(host.join("in.txt"), "into the volume").unwrap();
    stack.ok(&["up", "-d"]);
    stack.exec("app", &["sh", "-c", "echo kept > /data/old.txt"]);
    stack.ok(&["stop", "-t", "0"]);

    // Into the named volume and the bind of a stopped container, and out of the volume.
    stack.ok(&["cp", "in.txt", "app:/data/new.txt"]);
    stack.ok(&["cp", "in.txt", "app:/bound/b.txt"]);
    stack.ok(&["cp", "app:/data/old.txt", "old.txt"]);
    assert_eq!(fs::read_to_string(host.join("old.txt")).unwrap(), "kept\n");
    assert_eq!(fs::read_to_string(host.join("bound/b.txt")).unwrap(), "into the volume");
    let volume = stack.root().join("volumes/cmcp2_data/_data/new.txt");
    assert_eq!(fs::read_to_string(&volume).unwrap(), "into the volume");

    // Under a tmpfs mount point of a stopped container: as docker's cp (whose view of a
    // container never mounts its tmpfs), the file lands in the container's own layer beneath
    // the mount point; it stays there, hidden while the container runs by its new, empty tmpfs.
    stack.ok(&["cp", "in.txt", "app:/scratch/t.txt"]);
    stack.ok(&["cp", "app:/scratch/t.txt", "t.txt"]);
    assert_eq!(fs::read_to_string(host.join("t.txt")).unwrap(), "into the volume");

    stack.ok(&["start"]);
    assert_eq!(stack.exec("app", &["cat", "/data/new.txt"]).stdout, "into the volume");
    let r = stack.exec("app", &["ls", "-A", "/scratch"]);
    assert_eq!((r.stdout.as_str(), r.ok), ("", true), "{}", r.stderr);
    // Into the running container's tmpfs: berth copies in the container's own mount namespace,
    // so the file is in the tmpfs the process sees (docker's cp would put it in the layer
    // beneath, where the process cannot see it).
    stack.ok(&["cp", "in.txt", "app:/scratch/live.txt"]);
    assert_eq!(stack.exec("app", &["cat", "/scratch/live.txt"]).stdout, "into the volume");
    stack.ok(&["stop", "-t", "0"]);
    fs::remove_file(host.join("t.txt")).unwrap();
    stack.ok(&["cp", "app:/scratch/t.txt", "t.txt"]);
    assert_eq!(fs::read_to_string(host.join("t.txt")).unwrap(), "into the volume");
    let r = stack.berth(&["cp", "app:/scratch/live.txt", "live.txt"]);
    assert!(!r.ok, "the tmpfs went with the stop: {}", r.stdout);
    stack.ok(&["down", "-v"]);
}
