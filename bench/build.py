#!/usr/bin/env python3
"""Times building the webapp's app image (examples/webapp/app) with berth: first build vs cached.

usage: bench/build.py [--runs N] [--berth BINARY] [--json FILE]

Each run starts from a fresh root (its own BERTH_ROOT / BERTH_RUN under a `berth-` temp dir)
with berth/debian:bookworm imported by scripts/debian-base (not timed), then times
  first:   `berth build app`: apt-get update and install of python3 and psycopg2 from
           Debian's archive, COPY app.py
  cached:  `berth build app` again, nothing changed: every step from the cache
  edited:  `berth build app` after app.py changed: the COPY step and after only
Prints medians and min/max of each, the ratio cached/first, and checks the budget: a cached
rebuild takes at most 5% of a first build (exit status 1 when it does not). Builds berth in
release mode unless --berth is given. The first builds download packages from Debian's archive.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile

from common import REPO, build_berth, quiet, stats_ms as stats, timed

BUDGET = 0.05


def one_run(berth, tmp, i):
    run = os.path.join(tmp, f"run-{i}")
    project = os.path.join(run, "webapp")
    shutil.copytree(os.path.join(REPO, "examples/webapp"), project)
    env = dict(os.environ, BERTH_ROOT=os.path.join(run, "root"), BERTH_RUN=os.path.join(run, "run"), BERTH=berth)
    subprocess.run([os.path.join(REPO, "scripts/debian-base")], env=env, check=True, stdout=subprocess.DEVNULL)
    cmd = [berth, "-p", "benchbuild", "--progress", "plain", "build", "app"]
    try:
        first = timed(cmd, project, env)
        cached = timed(cmd, project, env)
        with open(os.path.join(project, "app/app.py"), "a") as f:
            f.write(f"\n# edited by bench/build.py, run {i}\n")
        edited = timed(cmd, project, env)
    finally:
        quiet([berth, "-p", "benchbuild", "down", "-v"], cwd=project, env=env)
        shutil.rmtree(run, ignore_errors=True)
    return first, cached, edited


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--berth", help="berth binary (default: build the release binary)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    berth = os.path.abspath(args.berth) if args.berth else build_berth()
    if subprocess.run([berth, "build", "--help"], capture_output=True).returncode != 0:
        sys.exit(f"{berth} has no `build` command yet")
    tmp = tempfile.mkdtemp(prefix="berth-bench-build-")
    try:
        samples = [one_run(berth, tmp, i) for i in range(args.runs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first, cached, edited = (list(s) for s in zip(*samples))
    ratio = statistics.median(cached) / statistics.median(first)
    result = {"image": "examples/webapp app", "runs": args.runs, "first": stats(first), "cached": stats(cached),
              "edited": stats(edited), "ratio_cached_over_first": ratio, "budget": BUDGET,
              "within_budget": ratio <= BUDGET}
    print(f"berth build app (examples/webapp), {args.runs} runs:")
    print(f"  {'':<38} {'median':>10} {'min':>10} {'max':>10}")
    for label, key in [("first build (fresh root)", "first"), ("cached rebuild (nothing changed)", "cached"),
                       ("rebuild after app.py changed", "edited")]:
        r = result[key]
        print(f"  {label:<38} {r['median_ms']:8.0f}ms {r['min_ms']:8.0f}ms {r['max_ms']:8.0f}ms")
    verdict = "ok" if ratio <= BUDGET else "OVER BUDGET"
    print(f"  cached/first (medians): {ratio * 100:.2f}% (budget {BUDGET * 100:.0f}%): {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if ratio > BUDGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
