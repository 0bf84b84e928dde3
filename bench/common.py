"""Shared helpers of the benchmark scripts (bench/run, bench/pull.py, bench/build.py).

Building berth, timing a command (wall time and the peak memory of the process itself), summary
statistics, berth's own roots under a `berth-` temp dir, and Debian's docker-registry on
127.0.0.1 for pull/push benchmarks.
"""
import os, socket, statistics, subprocess, sys, time, urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERTH_RELEASE = os.path.join(REPO, "target/x86_64-unknown-linux-gnu/release/berth")


def build_berth():
    """Builds berth in release mode and returns the binary's path."""
    subprocess.run(["cargo", "build", "--quiet", "--release"], cwd=REPO, check=True)
    return BERTH_RELEASE


def fail(cmd, code, stderr):
    sys.exit(f"{' '.join(map(str, cmd))} failed ({code}):\n{stderr.decode(errors='replace')[-4000:]}")


def run_rusage(cmd, cwd=None, env=None, check=True, stdout=subprocess.DEVNULL):
    """Runs `cmd` to its end; returns (milliseconds, max RSS of the process in KiB, stdout).

    The RSS comes from wait4(2) on the process itself, so it is that process's peak (and of any
    children it waited for), not of the processes it left running (shims, daemons)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE)
    # stderr is read after the exit: the commands timed here write little to it.
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - start) * 1000
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.stdout:
        proc.stdout.close()
    if check and proc.returncode != 0:
        fail(cmd, proc.returncode, err)
    return elapsed, usage.ru_maxrss, out


def timed(cmd, cwd=None, env=None, check=True):
    """Wall time of `cmd` in milliseconds (its output discarded; it must succeed when `check`)."""
    return run_rusage(cmd, cwd, env, check)[0]


def quiet(cmd, cwd=None, env=None):
    """Runs `cmd` untimed, ignoring its output and status (cleanup)."""
    return subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def stats(samples):
    """Median, min, max and the samples (milliseconds unless said otherwise)."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": list(samples)}


def stats_ms(samples):
    """stats() with the keys the older scripts' JSON has (`median_ms`, ...)."""
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples),
            "samples_ms": list(samples)}


def berth_env(tmp, name, berth):
    """The environment for a berth with its own root and run dir under `tmp`/`name`."""
    return dict(os.environ, BERTH_ROOT=os.path.join(tmp, name, "root"), BERTH_RUN=os.path.join(tmp, name, "run"),
                BERTH=berth)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_packages(pairs):
    """Installs the Debian packages of the (command, package) pairs whose command is missing."""
    import shutil
    need = [pkg for cmd, pkg in pairs if not shutil.which(cmd)]
    if need:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


class Registry:
    """Debian's docker-registry on 127.0.0.1 (a free port), storage under `tmp`; a context
    manager that stops it on exit."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.proc = None
        self.port = None

    def __enter__(self):
        self.port = free_port()
        storage = os.path.join(self.tmp, "registry")
        os.makedirs(storage, exist_ok=True)
        config = os.path.join(self.tmp, "registry.yml")
        with open(config, "w") as f:
            f.write(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
""")
        log_path = os.path.join(self.tmp, "registry.log")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1).read()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    with open(log_path) as f:
                        sys.exit(f"docker-registry did not start: {f.read()}")
                time.sleep(0.1)

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __exit__(self, *exc):
        self.stop()


def rss_kib(pid):
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes_named(comm, environ_has=None):
    """Pids of processes whose comm is `comm` (and, when given, whose environment contains the
    bytes `environ_has`, to tell this benchmark's processes from others')."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != comm:
                    continue
            if environ_has is not None:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if environ_has not in f.read():
                        continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids
