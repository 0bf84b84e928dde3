#!/usr/bin/env python3
"""Times `berth image pull` of the webapp's base image from a local registry, beside skopeo (root).

usage: bench/pull.py [--runs N] [--berth BINARY] [--json FILE]

Starts Debian's `docker-registry` on 127.0.0.1 (a free port, storage in a temp dir), puts
berth/debian:bookworm there (scripts/debian-base, then `berth image push`; `skopeo copy` from
berth's store, an OCI image layout, when push fails), then times N runs of
  berth:  `berth image pull 127.0.0.1:PORT/debian:bookworm` into an empty root
          (download, verify, unpack the layer, record the name)
  skopeo: `skopeo copy docker://127.0.0.1:PORT/debian:bookworm dir:EMPTY`
          (download and verify; no unpacking)
  skopeo + tar: the same, then `tar -x` of each layer (the work berth's pull does)
in turn, after one untimed run of berth and skopeo. Prints medians, min/max and the ratios
berth/skopeo and berth/(skopeo + tar). Builds berth in release mode unless --berth is given;
installs docker-registry and skopeo when they are missing. Everything lives under a `berth-`
temp dir, removed at the end.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

from common import REPO, Registry, berth_env, build_berth, ensure_packages, stats_ms as stats

BASE = "berth/debian:bookworm"


def seed(berth, tmp, ref):
    """berth/debian:bookworm into a root of its own, then into the registry as `ref`."""
    env = berth_env(tmp, "source", berth)
    subprocess.run([os.path.join(REPO, "scripts/debian-base"), BASE], env=env, check=True, stdout=subprocess.DEVNULL)
    tagged = subprocess.run([berth, "image", "tag", BASE, ref], env=env, capture_output=True)
    pushed = tagged.returncode == 0 and subprocess.run(
        [berth, "--progress", "quiet", "image", "push", ref], env=env, capture_output=True).returncode == 0
    if pushed:
        return "berth image push"
    # berth's store is an OCI image layout whose index names images by org.opencontainers.image.ref.name.
    images = os.path.join(env["BERTH_ROOT"], "images")
    with open(os.path.join(images, "index.json")) as f:
        names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name", "") for m in json.load(f)["manifests"]]
    name = next((n for n in names if n in (BASE, "docker.io/" + BASE) or n.endswith("/" + BASE)), None)
    if name is None:
        sys.exit(f"{BASE} not found in {images}/index.json (names: {names})")
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{images}:{name}", f"docker://{ref}"],
                   check=True)
    return "skopeo copy from berth's OCI layout"


def timed(cmd, env=None):
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return (time.perf_counter() - start) * 1000


# Each run writes into a folder of its own, all removed at the end: on ext4, creating files
# right after thousands were deleted is slow (the inode allocator skips recently deleted
# inodes), which would time the previous run's cleanup instead of the pull. Dirty pages of the
# previous run are written back (sync) before each timed run, for the same reason.
def pull_berth(berth, tmp, ref, i):
    os.sync()
    return timed([berth, "--progress", "quiet", "image", "pull", ref], berth_env(tmp, f"pull-{i}", berth))


def pull_skopeo(tmp, ref, i):
    os.sync()
    return timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"dir:{os.path.join(tmp, f'skopeo-{i}')}"])


def pull_skopeo_unpack(tmp, ref, i):
    """skopeo into dir:, then each layer unpacked with tar: the same work as berth's pull."""
    os.sync()
    dest = os.path.join(tmp, f"skopeo-x-{i}")
    start = time.perf_counter()
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}"], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(dest, "manifest.json")) as f:
        layers = [layer["digest"].split(":", 1)[1] for layer in json.load(f)["layers"]]
    for n, digest in enumerate(layers):
        rootfs = os.path.join(dest, f"layer-{n}")
        os.makedirs(rootfs)
        subprocess.run(["tar", "-x", "--numeric-owner", "-C", rootfs, "-f", os.path.join(dest, digest)], check=True)
    return (time.perf_counter() - start) * 1000


def measure(berth, tmp, ref, runs):
    """Seeds the registry, then alternates the timed pulls; returns the results and how the
    image got into the registry."""
    how = seed(berth, tmp, ref)
    pull_berth(berth, tmp, ref, "warm")
    pull_skopeo(tmp, ref, "warm")
    b, s, x = [], [], []
    for i in range(runs):
        b.append(pull_berth(berth, tmp, ref, i))
        s.append(pull_skopeo(tmp, ref, i))
        x.append(pull_skopeo_unpack(tmp, ref, i))
    result = {"image": ref, "seeded_with": how, "runs": runs, "berth": stats(b), "skopeo": stats(s),
              "skopeo_unpack": stats(x),
              "ratio_berth_over_skopeo": statistics.median(b) / statistics.median(s),
              "ratio_berth_over_skopeo_unpack": statistics.median(b) / statistics.median(x)}
    return result, how


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--berth", help="berth binary (default: build the release binary)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    ensure_packages([("docker-registry", "docker-registry"), ("skopeo", "skopeo")])
    berth = os.path.abspath(args.berth) if args.berth else build_berth()
    tmp = tempfile.mkdtemp(prefix="berth-bench-pull-")
    try:
        with Registry(tmp) as registry:
            result, how = measure(berth, tmp, f"127.0.0.1:{registry.port}/debian:bookworm", args.runs)
    except subprocess.CalledProcessError as e:
        sys.exit(f"{' '.join(map(str, e.cmd))} failed ({e.returncode}): {(e.stderr or b'').decode(errors='replace')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pull of {BASE} ({how}) from docker-registry on 127.0.0.1, {args.runs} runs:")
    print(f"  {'':<34} {'median':>9} {'min':>9} {'max':>9}")
    for label, key in [("berth image pull (empty root)", "berth"), ("skopeo copy docker:// dir:", "skopeo"),
                       ("skopeo copy + tar -x of the layers", "skopeo_unpack")]:
        r = result[key]
        print(f"  {label:<34} {r['median_ms']:7.0f}ms {r['min_ms']:7.0f}ms {r['max_ms']:7.0f}ms")
    print(f"  ratio berth/skopeo (medians): {result['ratio_berth_over_skopeo']:.2f}"
          " (berth also unpacks the layer; skopeo only stores blobs)")
    print(f"  ratio berth/(skopeo + tar -x) (medians): {result['ratio_berth_over_skopeo_unpack']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
