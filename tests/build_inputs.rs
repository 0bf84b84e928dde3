//! What a build takes from outside its context (root): compose `build.secrets` given to `RUN
//! --mount=type=secret` as files and as environment variables, and never kept anywhere.

mod stack;

use std::fs;
use std::path::{Path, PathBuf};

use stack::Stack;

/// Every file under `dir` (links not followed).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(files(&p)),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Files under `dir` whose bytes contain `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())))
        .collect()
}

const FILE_SECRET: &str = "file-s3cret-4711";
const ENV_SECRET: &str = "env-s3cret-0815";

fn secrets_stack() -> Stack {
    let stack = Stack::with_image("bsec1", "bsec1/base:1");
    fs::create_dir_all(stack.project_dir.join("app")).unwrap();
    stack.write("tok.txt", FILE_SECRET);
    // filetok: only a variable. envid: a variable and a file. opt: optional and not given.
    stack.write(
        "app/Dockerfile",
        "FROM bsec1/base:1\n\
         RUN --mount=type=secret,id=filetok,env=FILETOK \\\n\
         \x20   --mount=type=secret,id=envid,env=ENVTOK,target=/run/secrets/e,required \\\n\
         \x20   --mount=type=secret,id=opt,env=OPT \\\n\
         \x20   echo \"len-${#FILETOK}-${#ENVTOK}-${OPT-unset}\" > /lens && \\\n\
         \x20   test \"$(cat /run/secrets/e)\" = \"$ENVTOK\" && test ! -e /run/secrets/filetok && \\\n\
         \x20   echo ok > /checked\n\
         CMD [\"cat\", \"/lens\"]\n",
    );
    stack.write(
        "compose.yaml",
        "services:\n  app:\n    image: bsec1/app:1\n    network_mode: none\n    build:\n      context: ./app\n      network: none\n      secrets:\n        - filetok\n        - source: envtok\n          target: envid\nsecrets:\n  filetok:\n    file: ./tok.txt\n  envtok:\n    environment: BSEC1_TOKEN\n",
    );
    stack
}

fn build(stack: &Stack, token: Option<&str>, args: &[&str]) -> stack::Ran {
    let mut cmd = stack.command(&[&["build"], args].concat());
    cmd.env_remove("BSEC1_TOKEN");
    if let Some(t) = token {
        cmd.env("BSEC1_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    stack::Ran {
        ok: out.status.success(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn build_secrets_as_environment_variables_and_files() {
    let stack = secrets_stack();
    let r = build(&stack, Some(ENV_SECRET), &[]);
    assert!(r.ok, "build: {}", r.stderr);
    let out = stack.ok(&["run", "--rm", "--no-deps", "app"]).stdout;
    assert_eq!(
        out.trim(),
        format!("len-{}-{}-unset", FILE_SECRET.len(), ENV_SECRET.len()),
        "both secrets reached the step as variables; the optional one was left unset"
    );
    // Nothing berth keeps holds a value: not the layers, the config, the history, the cache.
    for secret in [FILE_SECRET, ENV_SECRET] {
        for dir in [stack.root(), stack.run_dir()] {
            assert_eq!(holding(&dir, secret), Vec::<PathBuf>::new(), "{secret} kept under {}", dir.display());
        }
        let inspect = stack.ok(&["image", "inspect", "bsec1/app:1"]).stdout;
        let history = stack.ok(&["image", "history", "--no-trunc", "bsec1/app:1"]).stdout;
        assert!(!inspect.contains(secret) && !history.contains(secret));
        assert!(!r.stderr.contains(secret) && !r.stdout.contains(secret));
    }
    // Another value is not another key: the step is served from the cache.
    let r = build(&stack, Some("another-value"), &[]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("CACHED"), "{}", r.stderr);
    assert!(!r.stderr.lines().any(|l| l.contains("RUN") && l.contains("DONE")), "{}", r.stderr);

    // A required secret whose variable is not set: one clear error, nothing built.
    let r = build(&stack, None, &["--no-cache"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("BSEC1_TOKEN") && r.stderr.contains("Dockerfile:2"), "{}", r.stderr);

    // A required secret the build was not given at all.
    stack.write(
        "app/Dockerfile",
        "FROM bsec1/base:1\nRUN --mount=type=secret,id=absent,env=ABSENT,required=true true\n",
    );
    let r = build(&stack, Some(ENV_SECRET), &[]);
    assert!(!r.ok);
    assert!(r.stderr.contains("secret absent is required"), "{}", r.stderr);
    assert_eq!(fs::read_dir(stack.root().join("containers")).map(|d| d.count()).unwrap_or(0), 0);
}

/// A key pair made for the test (`ssh-keygen`), and an `ssh-agent` holding it on a socket of
/// the test's dir; the agent is killed when dropped.
struct Agent {
    child: std::process::Child,
    sock: PathBuf,
    key: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let key = dir.join("id_test");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-test-key", "-f"])
            .arg(&key)
            .status()
            .expect("these tests need openssh-client (scripts/test installs it)");
        assert!(ok.success());
        let sock = dir.join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(std::time::Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ok =
            std::process::Command::new("ssh-add").arg("-q").arg(&key).env("SSH_AUTH_SOCK", &sock).status();
        assert!(ok.unwrap().success());
        Agent { child, sock, key }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the host's `ssh-add` and the libraries it loads into `dir` (the busybox image has no
/// ssh tools); it runs in a step as `/sshlib/ld.so --library-path /sshlib /sshlib/ssh-add`.
fn ssh_add_into(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("ldd").arg("/usr/bin/ssh-add").output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from);
        let Some(p) = path else { continue };
        let name = if line.contains("ld-linux") { "ld.so".into() } else { p.file_name().unwrap().to_owned() };
        fs::copy(&p, dir.join(name)).unwrap();
    }
    fs::copy("/usr/bin/ssh-add", dir.join("ssh-add")).unwrap();
}

const SSH_ADD: &str = "/sshlib/ld.so --library-path /sshlib /sshlib/ssh-add";

#[test]
fn ssh_agents_reach_run_steps() {
    let stack = Stack::with_image("bssh1", "bssh1/base:1");
    let agent = Agent::start(stack.dir.path());
    fs::create_dir_all(stack.project_dir.join("app")).unwrap();
    ssh_add_into(&stack.project_dir.join("app/sshlib"));
    // The default agent ($SSH_AUTH_SOCK) at BuildKit's default place; the step fails unless its
    // key is listed.
    stack.write(
        "app/Dockerfile",
        &format!(
            "FROM bssh1/base:1\nCOPY sshlib /sshlib\n\
             RUN --mount=type=ssh test \"$SSH_AUTH_SOCK\" = /run/buildkit/ssh_agent.0 && {SSH_ADD} -l | grep -q berth-test-key && echo listed > /listed\n\
             RUN test ! -e /run/buildkit/ssh_agent.0 && test -z \"$SSH_AUTH_SOCK\"\n"
        ),
    );
    stack.write(
        "compose.yaml",
        "services:\n  app:\n    image: bssh1/app:1\n    build:\n      context: ./app\n      network: none\n      ssh:\n        - default\n",
    );
    let run = |args: &[&str], sock: Option<&Path>| {
        let mut cmd = stack.command(args);
        cmd.env_remove("SSH_AUTH_SOCK");
        if let Some(s) = sock {
            cmd.env("SSH_AUTH_SOCK", s);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["build"], Some(&agent.sock));
    assert!(ok, "build with the default agent: {err}");
    // Where the agent is on this host is not in the key: another socket, the same key.
    let other = stack.dir.path().join("other.sock");
    std::os::unix::fs::symlink(&agent.sock, &other).unwrap();
    let (ok, err) = run(&["build"], Some(&other));
    assert!(ok && err.contains("CACHED"), "{err}");

    // `--ssh ID=KEY`: berth loads the key into an agent of its own; the mount's own target,
    // mode and owner.
    stack.write(
        "app/Dockerfile",
        &format!(
            "FROM bssh1/base:1\nCOPY sshlib /sshlib\n\
             RUN --mount=type=ssh,id=gh,target=/tmp/agent,mode=0640,uid=7,gid=8,required \
             test \"$SSH_AUTH_SOCK\" = /tmp/agent && test -S /tmp/agent && \
             test \"$(stat -c '%a %u %g' /tmp/agent)\" = '640 7 8' && {SSH_ADD} -l | grep -q berth-test-key\n"
        ),
    );
    let key = format!("gh={}", agent.key.display());
    let (ok, err) = run(&["build", "--ssh", &key], None);
    assert!(ok, "build with --ssh {key}: {err}");
    // A required agent not given: one clear error naming the line.
    let (ok, err) = run(&["build"], Some(&agent.sock));
    assert!(!ok && err.contains("ssh agent gh is required") && err.contains("Dockerfile:3"), "{err}");
    // `default` without SSH_AUTH_SOCK.
    let (ok, err) = run(&["build", "--ssh", "gh"], None);
    assert!(!ok && err.contains("SSH_AUTH_SOCK is not set"), "{err}");
    assert_eq!(fs::read_dir(stack.root().join("containers")).map(|d| d.count()).unwrap_or(0), 0);
}
