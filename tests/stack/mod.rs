//! A compose project in a throwaway folder with its own BERTH_ROOT and BERTH_RUN (a temp dir
//! named `berth-...`), a busybox image imported into its store, and the `berth` binary run
//! against it. Dropping it runs `berth down -v --remove-orphans` and removes the folder, so
//! a failing test leaves nothing behind.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;

/// The image every stack can use.
pub const IMAGE: &str = "berth-test/busybox:latest";

/// One project.
pub struct Stack {
    pub dir: Rc<tempfile::TempDir>,
    pub project_dir: PathBuf,
    pub name: String,
}

/// What a berth command did.
pub struct Ran {
    pub ok: bool,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Stack {
    /// A project named `name` whose compose file is `yaml`, with the busybox image loaded.
    pub fn new(name: &str, yaml: &str) -> Stack {
        let stack = Stack::with_image(name, IMAGE);
        stack.write("compose.yaml", yaml);
        stack
    }

    /// A project named `name` whose folder is a copy of `src` (a folder of this repo).
    pub fn from_dir(name: &str, src: &Path, image: &str) -> Stack {
        let stack = Stack::with_image(name, image);
        for entry in fs::read_dir(src).expect("example folder").flatten() {
            if entry.path().is_file() {
                fs::copy(entry.path(), stack.project_dir.join(entry.file_name())).unwrap();
            }
        }
        stack
    }

    /// A project named `name` whose folder is a copy of `src` with its subfolders (build
    /// contexts), with busybox imported as `image`.
    pub fn from_tree(name: &str, src: &Path, image: &str) -> Stack {
        let stack = Stack::with_image(name, image);
        copy_tree(src, &stack.project_dir);
        stack
    }

    /// An empty project folder, with busybox imported as `image`.
    pub fn with_image(name: &str, image: &str) -> Stack {
        assert!(Path::new(common::BUSYBOX).exists(), "tests need busybox-static (scripts/test installs it)");
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().expect("temp dir");
        let project_dir = dir.path().join("project");
        fs::create_dir_all(&project_dir).unwrap();
        let stack = Stack { dir: Rc::new(dir), project_dir, name: name.to_string() };
        let rootfs = stack.dir.path().join("rootfs");
        common::make_busybox_rootfs(&rootfs);
        let r = stack.berth(&["image", "import", "-c", "CMD [\"sh\"]", rootfs.to_str().unwrap(), image]);
        assert!(r.ok, "image import: {}", r.stderr);
        stack
    }

    /// Another project `name` in the same root and run dir (and image store), with its own
    /// folder and compose file.
    pub fn sibling(&self, name: &str, yaml: &str) -> Stack {
        let project_dir = self.dir.path().join(name);
        fs::create_dir_all(&project_dir).unwrap();
        let stack = Stack { dir: Rc::clone(&self.dir), project_dir, name: name.to_string() };
        stack.write("compose.yaml", yaml);
        stack
    }

    /// Writes a file in the project folder.
    pub fn write(&self, file: &str, text: &str) {
        fs::write(self.project_dir.join(file), text).unwrap();
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// `berth ARGS` in the project folder, with this stack's dirs and project name.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(["-p", &self.name, "--progress", "plain"])
            .args(args)
            .current_dir(&self.project_dir)
            .env("BERTH_ROOT", self.root())
            .env("BERTH_RUN", self.run_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// `program` (berth, or a link to it) in `dir` with this stack's dirs only: no project
    /// name, no flags, so a test chooses how the project is found.
    pub fn bare_command(&self, program: &Path, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir)
            .env("BERTH_ROOT", self.root())
            .env("BERTH_RUN", self.run_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `berth ARGS` to the end.
    pub fn berth(&self, args: &[&str]) -> Ran {
        let out: Output = self.command(args).output().expect("run berth");
        Ran {
            ok: out.status.success(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `berth ARGS` and insists it succeeds.
    pub fn ok(&self, args: &[&str]) -> Ran {
        let r = self.berth(args);
        assert!(r.ok, "berth {args:?} failed ({}):\n{}\n{}", r.code, r.stdout, r.stderr);
        r
    }

    /// Starts `berth ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn berth")
    }

    /// `ps -a --format json`, one value per container.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        let r = self.ok(&["ps", "-a", "--no-trunc", "--format", "json"]);
        r.stdout.lines().map(|l| serde_json::from_str(l).expect("ps json")).collect()
    }

    /// The ps entry of container `name`.
    pub fn container(&self, name: &str) -> Option<serde_json::Value> {
        self.ps().into_iter().find(|c| c["Name"] == name)
    }

    /// Waits until `check` holds on the ps entries, or panics after `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
        let end = Instant::now() + limit;
        loop {
            let ps = self.ps();
            if check(&ps) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {ps:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `exec -T SERVICE CMD...` output.
    pub fn exec(&self, service: &str, cmd: &[&str]) -> Ran {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(cmd);
        self.berth(&args)
    }
}

/// Copies folder `src` into `dest` (files, with their modes, and subfolders).
pub fn copy_tree(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for entry in fs::read_dir(src).expect("folder").flatten() {
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.berth(&["down", "-v", "--remove-orphans", "-t", "0"]);
    }
}
