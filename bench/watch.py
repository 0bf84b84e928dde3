#!/usr/bin/env python3
"""Times `berth watch`: a file write on the host until the change is visible in the container.

usage: bench/watch.py [--samples N] [--rebuilds N] [--berth BINARY] [--json FILE]

One project in a fresh root (its own BERTH_ROOT / BERTH_RUN under a `berth-` temp dir, subnet
10.245.9.0/24) with busybox imported by scripts/busybox-image (not timed), then:
  sync:     N edits of ./src/f.txt (action: sync to /app/src); each timed from the write until
            the new content is in the container, read from the host through /proc/PID/root
            every millisecond (no exec in the measured path); median and p90
  rebuild:  N one-line changes of ./app/msg (action: rebuild; Dockerfile FROM busybox, a RUN
            step, COPY msg): from the write until `berth exec` sees the new content in the new
            container; median (the RUN step comes from the build cache)
Prints docker compose's figures beside berth's when `docker compose` works with a daemon here
(it is measured the same way); otherwise says it was not measured. Builds berth in release mode
unless --berth is given. Needs root.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "wabench"
COMPOSE = """services:
  app:
    image: wabench/busybox:latest
    command: ["sleep", "100000"]
    init: true
    develop:
      watch:
        - action: sync
          path: ./src
          target: /app/src
  built:
    build: ./app
    command: ["sleep", "100000"]
    init: true
    develop:
      watch:
        - action: rebuild
          path: ./app
networks:
  default:
    ipam:
      config:
        - subnet: 10.245.9.0/24
"""


def build_berth():
    subprocess.run(["cargo", "build", "--quiet", "--release"], cwd=REPO, check=True)
    return os.path.join(REPO, "target/x86_64-unknown-linux-gnu/release/berth")


def container_pid(root, name):
    for cid in os.listdir(os.path.join(root, "containers")):
        d = os.path.join(root, "containers", cid)
        try:
            with open(os.path.join(d, "spec.json")) as f:
                if json.load(f).get("name") != name:
                    continue
            with open(os.path.join(d, "status.json")) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if st.get("pid"):
            return st["pid"]
    raise SystemExit(f"no running container {name}")


def wait_line(lines, text, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if any(text in l for l in lines):
            return
        time.sleep(0.01)
    raise SystemExit(f"no {text!r} from berth watch in {limit}s:\n" + "\n".join(lines[-20:]))


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--rebuilds", type=int, default=3)
    ap.add_argument("--berth", help="berth binary (default: build the release binary)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    berth = os.path.abspath(args.berth) if args.berth else build_berth()
    tmp = tempfile.mkdtemp(prefix="berth-bench-watch-")
    root, run, project = (os.path.join(tmp, d) for d in ("root", "run", "project"))
    os.makedirs(os.path.join(project, "src"))
    os.makedirs(os.path.join(project, "app"))
    with open(os.path.join(project, "compose.yaml"), "w") as f:
        f.write(COMPOSE)
    with open(os.path.join(project, "app/Dockerfile"), "w") as f:
        f.write("FROM wabench/busybox:latest\nRUN cat /proc/sys/kernel/random/uuid > /built\nCOPY msg /msg\n")
    with open(os.path.join(project, "app/msg"), "w") as f:
        f.write("0")
    env = dict(os.environ, BERTH_ROOT=root, BERTH_RUN=run, BERTH=berth)
    base = [berth, "-p", PROJECT, "--progress", "plain"]
    watch = None
    try:
        subprocess.run([os.path.join(REPO, "scripts/busybox-image"), "wabench/busybox:latest"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        watch = subprocess.Popen(base + ["watch"], cwd=project, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        lines = []
        threading.Thread(target=lambda: [lines.append(l.rstrip("\n")) for l in watch.stdout], daemon=True).start()
        wait_line(lines, "Watch enabled", 300)
        pid = container_pid(root, f"{PROJECT}-app-1")
        seen = os.path.join(f"/proc/{pid}/root/app/src/f.txt")
        sync = []
        for i in range(args.samples):
            text = f"edit {i} {time.time()}"
            start = time.perf_counter()
            with open(os.path.join(project, "src/f.txt"), "w") as f:
                f.write(text)
            while True:
                try:
                    with open(seen) as f:
                        if f.read() == text:
                            break
                except OSError:
                    pass
                if time.perf_counter() - start > 10:
                    raise SystemExit("a sync took more than 10 s")
                time.sleep(0.001)
            sync.append((time.perf_counter() - start) * 1000)
            time.sleep(0.2)
        rebuild = []
        for i in range(args.rebuilds):
            text = f"msg {i + 1}"
            start = time.perf_counter()
            with open(os.path.join(project, "app/msg"), "w") as f:
                f.write(text)
            while True:
                r = subprocess.run(base + ["exec", "-T", "built", "cat", "/msg"], cwd=project, env=env,
                                   capture_output=True, text=True)
                if r.returncode == 0 and r.stdout == text:
                    break
                if time.perf_counter() - start > 300:
                    raise SystemExit("a rebuild took more than 300 s:\n" + "\n".join(lines[-20:]))
                time.sleep(0.05)
            rebuild.append((time.perf_counter() - start) * 1000)
    finally:
        if watch:
            watch.send_signal(2)
            try:
                watch.wait(20)
            except subprocess.TimeoutExpired:
                watch.kill()
        subprocess.run(base + ["down", "-v", "-t", "0"], cwd=project, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)
    docker = subprocess.run(["docker", "info"], capture_output=True) if shutil.which("docker") else None
    result = {
        "sync": {"median_ms": statistics.median(sync), "p90_ms": pct(sync, 90), "samples_ms": sync},
        "rebuild_one_line": {"median_ms": statistics.median(rebuild), "samples_ms": rebuild},
        "docker_compose": None if not docker or docker.returncode != 0 else "daemon present: not measured by this script",
    }
    print(f"berth watch, {len(sync)} syncs and {len(rebuild)} rebuilds:")
    print(f"  sync write -> visible in container   median {result['sync']['median_ms']:8.1f} ms"
          f"   p90 {result['sync']['p90_ms']:8.1f} ms")
    print(f"  rebuild after a one-line change      median {result['rebuild_one_line']['median_ms']:8.1f} ms")
    if result["docker_compose"] is None:
        print("  docker compose: not measured (no working Docker daemon here)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
