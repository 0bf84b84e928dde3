#!/usr/bin/env python3
"""Measures loading a 200-service compose file with anchors and extends.

usage: bench/load.py [BERTH_BINARY] [RUNS]

Times whole `berth config -q` and `berth config --format json` processes (so process start and
schema compilation are included) and prints the medians; when `docker compose` or
`podman-compose` is installed, times the same file with it and prints the ratio.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

SERVICES = 200


def write_project(folder):
    lines = [
        "name: bench",
        "x-common: &common",
        "  image: busybox:latest",
        "  restart: unless-stopped",
        "  environment:",
        "    TZ: UTC",
        "    LEVEL: ${LEVEL:-info}",
        "  labels: [team=bench, tier=backend]",
        "  healthcheck:",
        "    test: wget -q -O /dev/null http://127.0.0.1/ || exit 1",
        "    interval: 30s",
        "services:",
        "  base:",
        "    <<: *common",
        "    ports: ['8000']",
        "    volumes: ['./data:/data', 'shared:/shared']",
    ]
    for i in range(SERVICES - 1):
        lines += [
            f"  svc{i}:",
            "    <<: *common" if i % 2 else "    extends: base",
            f"    command: sh -c 'echo {i}; sleep 1000'",
            f"    depends_on: [{'base' if i == 0 else f'svc{i - 1}'}]",
            f"    networks: [net{i % 5}]",
        ]
    lines += ["networks:"] + [f"  net{n}: {{}}" for n in range(5)]
    lines += ["volumes:", "  shared: {}"]
    with open(os.path.join(folder, "compose.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def median_ms(cmd, cwd, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append((time.perf_counter() - start) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode()[:300]}")
    return statistics.median(times)


def main():
    berth = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/x86_64-unknown-linux-gnu/release/berth")
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as folder:
        write_project(folder)
        q = median_ms([berth, "config", "-q"], folder, runs)
        j = median_ms([berth, "config", "--format", "json"], folder, runs)
        print(f"berth config -q, {SERVICES} services (anchors, extends): median {q:.1f} ms over {runs} runs")
        print(f"berth config --format json, {SERVICES} services: median {j:.1f} ms over {runs} runs")
        others = []
        if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
            others.append(("docker compose", ["docker", "compose", "config", "-q"]))
        if shutil.which("podman-compose"):
            others.append(("podman-compose", ["podman-compose", "config"]))
        for name, cmd in others:
            t = median_ms(cmd, folder, max(5, runs // 3))
            print(f"{name} config: median {t:.1f} ms; ratio {t / q:.1f}x berth's")
        if not others:
            print("(neither docker compose nor podman-compose is installed: no ratio)")


if __name__ == "__main__":
    main()
