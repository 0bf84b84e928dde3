#!/usr/bin/env python3
"""Measures `berth up -d` and `berth down` of a 10-service stack on real containers (root).

usage: bench/up.py [BERTH_BINARY] [RUNS]

Each run: `up -d` from nothing (networks, containers started by dependency level), `up -d`
again (reconcile only: everything is up to date), `down`. Prints the median and spread of each.
When `docker compose` is installed (and can run busybox), times the same stack with it and
prints the ratio. Uses its own BERTH_ROOT / BERTH_RUN under a `berth-` temp dir.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

SERVICES = 10


def write_project(folder):
    lines = ["name: benchup", "services:"]
    for i in range(SERVICES):
        lines += [
            f"  s{i}:",
            "    image: busybox:latest",
            "    command: ['sleep', '100000']",
            "    init: true",
            "    stop_grace_period: 1s",
        ]
        if i >= 2:
            lines.append(f"    depends_on: [s{i - 2}]")
    lines += ["networks:", "  default:", "    ipam:", "      config:", "        - subnet: 10.219.0.0/24"]
    with open(os.path.join(folder, "compose.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def timed(cmd, cwd, env):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def measure(base_cmd, cwd, env, runs):
    up, again, down = [], [], []
    for _ in range(runs):
        up.append(timed(base_cmd + ["up", "-d"], cwd, env))
        again.append(timed(base_cmd + ["up", "-d"], cwd, env))
        down.append(timed(base_cmd + ["down", "-t", "1"], cwd, env))
    return up, again, down


def show(name, samples):
    print(f"  {name:<22} median {statistics.median(samples):8.1f} ms   min {min(samples):8.1f}   max {max(samples):8.1f}")


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    berth = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(repo, "target/x86_64-unknown-linux-gnu/release/berth")
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    tmp = tempfile.mkdtemp(prefix="berth-bench-")
    try:
        env = dict(os.environ, BERTH_ROOT=os.path.join(tmp, "root"), BERTH_RUN=os.path.join(tmp, "run"), BERTH=berth)
        subprocess.run([os.path.join(repo, "scripts/busybox-image"), "busybox:latest"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        project = os.path.join(tmp, "project")
        os.makedirs(project)
        write_project(project)
        cmd = [berth, "--progress", "quiet"]
        try:
            up, again, down = measure(cmd, project, env, runs)
        finally:
            subprocess.run(cmd + ["down", "-t", "0"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        print(f"berth, {SERVICES} services, {runs} runs:")
        show("up -d (from nothing)", up)
        show("up -d (up to date)", again)
        show("down", down)
        docker = shutil.which("docker")
        if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
            d_up, d_again, d_down = measure([docker, "compose"], project, dict(os.environ), runs)
            print("docker compose:")
            show("up -d (from nothing)", d_up)
            show("up -d (up to date)", d_again)
            show("down", d_down)
            print(f"ratio up: {statistics.median(d_up) / statistics.median(up):.1f}x, "
                  f"down: {statistics.median(d_down) / statistics.median(down):.1f}x")
        else:
            print("(docker compose not available: no ratio)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
