#!/usr/bin/env python3
"""Times `berth image pull` of the webapp's base image from a local registry, beside skopeo (root).

usage: bench/pull.py [--runs N] [--berth BINARY] [--baseline BINARY] [--floor] [--json FILE]

Starts Debian's `docker-registry` on 127.0.0.1 (a free port, storage in a temp dir), puts
berth/debian:bookworm there (scripts/debian-base, then `berth image push`; `skopeo copy` from
berth's store, an OCI image layout, when push fails), then times N runs of
  berth:  `berth image pull 127.0.0.1:PORT/debian:bookworm` into an empty root
          (download, verify, unpack the layer, record the name)
  skopeo: `skopeo copy docker://127.0.0.1:PORT/debian:bookworm dir:EMPTY`
          (download and verify; no unpacking)
  skopeo + tar: the same, then `tar -x` of each layer (the work berth's pull does)
in turn, after one untimed run of berth and skopeo. With --floor, also the CPU time of the
work no pull that unpacks can skip, each part timed alone with the fastest tool at hand (the
median of N runs): decompressing the layers (zstd/gzip to /dev/null), the two digests
(sha256 of each blob and of each tar, by OpenSSL through hashlib), and the kernel's part of
making the layers' files from memory (mkdir, open/write/close, symlink, link, nothing else:
no owners, modes or times, no reading, in a fresh dir); their sum over this machine's cores
is what the fastest pull could take with every core busy all the time and no other work
(no download, no blob write, no process start): a floor to set beside skopeo's time. With --baseline, another berth binary's
pull is timed in the same rounds (before/after a change, alternating). Prints medians, min/max,
the CPU time (user + system, of the process and its children: less sensitive to other load than
wall time) and the ratios berth/skopeo and berth/(skopeo + tar). Builds berth in release mode
unless --berth is given;
installs docker-registry and skopeo when they are missing. Everything lives under a `berth-`
temp dir, removed at the end.

The file system matters: on ext4 without a journal (this project's test VMs), creating inodes in a
block group where thousands were deleted in the last minutes is many times slower (the allocator
skips recently deleted inodes, one buffer lookup each), so a run right after a big `rm` in the
same place times that instead. TMPDIR picks where the temp dir goes: a fresh top-level dir (`mkdir
/bench-N`; ext4 spreads top-level dirs over the block groups) keeps other processes' deletions in
/tmp out of the figures.
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
    """(wall ms, CPU ms: user + system of the process and the children it waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    # stderr is read after the exit: the commands timed here write little to it.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    err = proc.stderr.read()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd, stderr=err)
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


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
    _, cpu = timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}"])
    with open(os.path.join(dest, "manifest.json")) as f:
        layers = [layer["digest"].split(":", 1)[1] for layer in json.load(f)["layers"]]
    for n, digest in enumerate(layers):
        rootfs = os.path.join(dest, f"layer-{n}")
        os.makedirs(rootfs)
        cpu += timed(["tar", "-x", "--numeric-owner", "-C", rootfs, "-f", os.path.join(dest, digest)])[1]
    return (time.perf_counter() - start) * 1000, cpu


# Makes the files of a tar (read into memory first) and prints the system CPU seconds the making
# took: the kernel's part of an unpack, without owners, modes, times or reading.
CREATE_FILES = r"""
import os, resource, sys, tarfile
tar, dest = sys.argv[1], sys.argv[2]
with tarfile.open(tar) as tf:
    members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]
made = {dest}
def parents(path):
    # The dirs above `path` that no entry made yet (a set, not a system call, per entry).
    parent = os.path.dirname(path)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        while parent not in made:
            made.add(parent)
            parent = os.path.dirname(parent)
start = resource.getrusage(resource.RUSAGE_SELF).ru_stime
for m, data in members:
    path = os.path.normpath(os.path.join(dest, m.name))
    if path == dest:
        continue
    parents(path)
    if m.isdir():
        if path not in made:
            os.mkdir(path)
            made.add(path)
    elif m.isreg():
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
    elif m.issym():
        os.symlink(m.linkname, path)
    elif m.islnk():
        os.link(os.path.join(dest, m.linkname), path)
print(resource.getrusage(resource.RUSAGE_SELF).ru_stime - start)
"""


def floor_layers(tmp, ref):
    """The image's layer blobs (by skopeo) and each one's tar: (blob, decompressor, tar)."""
    src = os.path.join(tmp, "floor-blobs")
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"dir:{src}"], check=True)
    with open(os.path.join(src, "manifest.json")) as f:
        blobs = [os.path.join(src, layer["digest"].split(":", 1)[1]) for layer in json.load(f)["layers"]]
    layers = []
    for n, blob in enumerate(blobs):
        with open(blob, "rb") as f:
            magic = f.read(4)
        tool = "zstd" if magic == b"\x28\xb5\x2f\xfd" else "gzip" if magic[:2] == b"\x1f\x8b" else None
        plain = os.path.join(tmp, f"floor-{n}.tar")
        with open(plain, "wb") as out:
            subprocess.run([tool, "-dc", blob] if tool else ["cat", blob], stdout=out, check=True)
        layers.append((blob, tool, plain))
    return layers


def floor_round(tmp, layers, i):
    """One round of the floor's parts (CPU ms each). The files are made beside the round's
    pulls (in `tmp`, right after them), so that the file system is in the state they met."""
    import hashlib
    os.sync()
    decompress = sha = create = 0.0
    for n, (blob, tool, plain) in enumerate(layers):
        if tool:
            decompress += timed([tool, "-dc", blob])[1]
        for path in (blob, plain):
            with open(path, "rb") as f:
                data = f.read()
            start = time.process_time()
            hashlib.sha256(data).hexdigest()
            sha += (time.process_time() - start) * 1000
            del data
        dest = os.path.join(tmp, f"floor-files-{i}-{n}")
        os.makedirs(dest)
        out = subprocess.run([sys.executable, "-c", CREATE_FILES, plain, dest], capture_output=True,
                             text=True, check=True).stdout
        create += float(out) * 1000
    return {"decompress": decompress, "sha256": sha, "create_files_sys": create}


def floor_summary(rounds):
    """Medians of the floor's parts, their sum, and the sum over this machine's cores."""
    result = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    result["cpu_ms"] = sum(result.values())
    result["cores"] = os.cpu_count()
    result["wall_ms_all_cores"] = result["cpu_ms"] / result["cores"]
    return result


def measure(berth, baseline, tmp, ref, runs, with_floor=False):
    """Seeds the registry, then alternates the timed pulls (and the floor's parts); returns
    the results and how the image got into the registry."""
    how = seed(berth, tmp, ref)
    layers = floor_layers(tmp, ref) if with_floor else None
    floor_rounds = []
    pull_berth(berth, tmp, ref, "warm")
    if baseline:
        pull_berth(baseline, tmp, ref, "warm-baseline")
    pull_skopeo(tmp, ref, "warm")
    runs_of = {"berth": [], "baseline": [], "skopeo": [], "skopeo_unpack": []}
    for i in range(runs):
        runs_of["berth"].append(pull_berth(berth, tmp, ref, i))
        if baseline:
            runs_of["baseline"].append(pull_berth(baseline, tmp, ref, f"baseline-{i}"))
        runs_of["skopeo"].append(pull_skopeo(tmp, ref, i))
        runs_of["skopeo_unpack"].append(pull_skopeo_unpack(tmp, ref, i))
        if layers:
            floor_rounds.append(floor_round(tmp, layers, i))
    result = {"image": ref, "seeded_with": how, "runs": runs}
    if floor_rounds:
        result["floor"] = floor_summary(floor_rounds)
    for key, samples in runs_of.items():
        if samples:
            result[key] = stats([w for w, _ in samples])
            result[key + "_cpu"] = stats([c for _, c in samples])
    b = result["berth"]["median_ms"]
    result["ratio_berth_over_skopeo"] = b / result["skopeo"]["median_ms"]
    result["ratio_berth_over_skopeo_unpack"] = b / result["skopeo_unpack"]["median_ms"]
    return result, how


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--berth", help="berth binary (default: build the release binary)")
    ap.add_argument("--baseline", help="another berth binary, timed in the same rounds (e.g. main's)")
    ap.add_argument("--floor", action="store_true",
                    help="also time, part by part, the work no unpacking pull can skip (see above)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    ensure_packages([("docker-registry", "docker-registry"), ("skopeo", "skopeo")])
    berth = os.path.abspath(args.berth) if args.berth else build_berth()
    tmp = tempfile.mkdtemp(prefix="berth-bench-pull-")
    try:
        with Registry(tmp) as registry:
            baseline = os.path.abspath(args.baseline) if args.baseline else None
            ref = f"127.0.0.1:{registry.port}/debian:bookworm"
            result, how = measure(berth, baseline, tmp, ref, args.runs, args.floor)
    except subprocess.CalledProcessError as e:
        sys.exit(f"{' '.join(map(str, e.cmd))} failed ({e.returncode}): {(e.stderr or b'').decode(errors='replace')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pull of {BASE} ({how}) from docker-registry on 127.0.0.1, {args.runs} runs:")
    print(f"  {'':<34} {'median':>9} {'min':>9} {'max':>9}   {'CPU':>9} {'min':>9} {'max':>9}")
    for label, key in [("berth image pull (empty root)", "berth"), ("baseline berth image pull", "baseline"),
                       ("skopeo copy docker:// dir:", "skopeo"), ("skopeo copy + tar -x of the layers", "skopeo_unpack")]:
        if key not in result:
            continue
        r, c = result[key], result[key + "_cpu"]
        print(f"  {label:<34} {r['median_ms']:7.0f}ms {r['min_ms']:7.0f}ms {r['max_ms']:7.0f}ms"
              f"   {c['median_ms']:7.0f}ms {c['min_ms']:7.0f}ms {c['max_ms']:7.0f}ms")
    print(f"  ratio berth/skopeo (medians): {result['ratio_berth_over_skopeo']:.2f}"
          " (berth also unpacks the layer; skopeo only stores blobs)")
    print(f"  ratio berth/(skopeo + tar -x) (medians): {result['ratio_berth_over_skopeo_unpack']:.2f}")
    if "floor" in result:
        f = result["floor"]
        print(f"  floor (CPU no unpacking pull can skip, medians): decompress {f['decompress']:.0f}ms"
              f" + sha256 of blobs and tars {f['sha256']:.0f}ms + kernel making the files"
              f" {f['create_files_sys']:.0f}ms = {f['cpu_ms']:.0f}ms")
        print(f"  floor over {f['cores']} cores: {f['wall_ms_all_cores']:.0f}ms"
              f" = {f['wall_ms_all_cores'] / result['skopeo']['median_ms']:.2f} of skopeo's median"
              f"; berth's CPU is {result['berth_cpu']['median_ms'] / f['cpu_ms']:.2f}x the floor's")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
