//! Container start to exit of `/bin/true`, without and with one network, beside `runc run` and
//! `crun run` of the same rootfs when they are installed, and the shim's resident memory. Run as
//! root: `cargo bench --bench runtime_start` (`BENCH_RUNS=N` for more or fewer runs,
//! `BENCH_JSON=FILE` to write the figures as JSON, `BENCH_SUBNET` for the network's subnet,
//! default 10.244.4.0/24). Budgets (issue 16): median at most 4 ms without a network, 6 ms with
//! one; the shim at most 4 MiB. `bench/run` runs this and puts the figures in its table.
//!
//! What is timed, per run: from the call of `Runtime::run` (the container's records are written
//! durably, the shim is launched, the container's process has exec'd) to `Runtime::wait`
//! returning the exit (code recorded by the shim and observed by the caller). The same with
//! `Runtime::create` then `Runtime::start` is printed too (`run` writes the records while the
//! shim starts up; `create` must have written them before it returns). The container has its
//! own mount, pid, uts, ipc, cgroup and network namespace (a fresh one with only `lo`, no
//! network attached), cgroups, docker's default capabilities and seccomp filter.
//! `Runtime::remove` is outside that time and timed on its own.
//!
//! With a network: `Networks::attach` of the container to one bridge network (its netns with a
//! veth, address, routes, DNS names, hosts files) is inside the time, then the same run and
//! wait in that namespace; `Networks::detach` and `Runtime::remove` are outside it.
//!
//! runc and crun get an OCI bundle generated here for the same busybox rootfs: the same
//! namespaces (their own netns with only `lo`), docker's default capabilities, masked and
//! read-only paths; each is timed from spawning `runc run` to its exit (the runtime removes the
//! container itself). The ways alternate run by run, so that all see the same machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::netns::{AttachRequest, EndpointRequest, IpamPool, NetMode, NetworkSpec, Networks};
use berth::runtime::spec::{ContainerSpec, EtcFiles, NetNamespace};
use berth::runtime::{Runtime, State};
use berth::state::Dirs;

const WARMUP: usize = 3;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, 90th percentile, min and max, in ms.
fn summary(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.2} ms, p90 {:.2} ms (min {:.2}, max {:.2}; {} runs)",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// The ways a container is started, alternated run by run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Way {
    Run,
    CreateStart,
    Network,
    Oci(usize),
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(50).max(1);
    let subnet = std::env::var("BENCH_SUBNET").unwrap_or_else(|_| "10.244.4.0/24".into());
    let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir().expect("temp dir");
    let layer = dir.path().join("layer");
    std::fs::create_dir_all(layer.join("bin")).expect("layer");
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(layer.join(d)).expect("layer");
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("busybox-static is installed");
    std::os::unix::fs::symlink("busybox", layer.join("bin/true")).expect("layer");
    std::os::unix::fs::symlink("busybox", layer.join("bin/sleep")).expect("layer");
    let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
    let exe = env!("CARGO_BIN_EXE_berth");
    let runtime = Runtime::new(&dirs, exe);
    let nets = Networks::new(&dirs).with_exe(exe);
    let spec_for = |args: &[&str]| {
        let mut s = ContainerSpec {
            id: berth::runtime::new_id().expect("random id"),
            name: "bench".into(),
            hostname: "bench".into(),
            ..ContainerSpec::default()
        };
        s.rootfs.lower_dirs = vec![layer.clone()];
        s.process.args = args.iter().map(|a| a.to_string()).collect();
        s
    };
    let network = NetworkSpec {
        name: "benchstart_default".into(),
        ipam: vec![IpamPool { subnet: Some(subnet.clone()), ..IpamPool::default() }],
        ..NetworkSpec::default()
    };
    nets.create(&network).expect("create the network (run as root)");

    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle");
    std::fs::write(bundle.join("config.json"), oci_config(&layer).to_string()).expect("config.json");
    // A runtime that cannot run the bundle here (crun refuses hybrid cgroups) is left out.
    let oci: Vec<(&str, String)> = ["runc", "crun"]
        .into_iter()
        .filter_map(|n| which(n).map(|p| (n, p)))
        .filter(|(n, p)| {
            let ok = oci_try(p, &bundle, &dir.path().join(n), usize::MAX);
            if !ok {
                println!("{n}: cannot run the bundle on this machine, left out");
            }
            ok
        })
        .collect();

    let mut ways = vec![Way::Run, Way::CreateStart, Way::Network];
    ways.extend((0..oci.len()).map(Way::Oci));
    let mut samples: BTreeMap<Way, Vec<Duration>> = BTreeMap::new();
    let mut removes = Vec::new();
    for i in 0..runs + WARMUP {
        // Rotate the order too, so that no way always follows the same one.
        for k in 0..ways.len() {
            let way = ways[(i + k) % ways.len()];
            let (elapsed, remove) = match way {
                Way::Oci(n) => (oci_run(oci[n].1.as_str(), &bundle, &dir.path().join(oci[n].0), i), None),
                _ => start_to_exit(&runtime, &nets, spec_for(&["/bin/true"]), way),
            };
            if i >= WARMUP {
                samples.entry(way).or_default().push(elapsed);
                removes.extend(remove);
            }
        }
    }
    nets.remove(&network.name).expect("remove the network");

    let get = |w: Way| samples.get(&w).cloned().unwrap_or_default();
    println!("berth run+wait of /bin/true:              {}", summary(&get(Way::Run)));
    println!("berth create+start+wait of /bin/true:     {}", summary(&get(Way::CreateStart)));
    println!("berth attach+run+wait, one network:       {}", summary(&get(Way::Network)));
    println!("berth remove (not in the times above):    {}", summary(&removes));
    for (n, (name, _)) in oci.iter().enumerate() {
        let v = get(Way::Oci(n));
        println!("{name} run of /bin/true:{:>pad$}{}", "", summary(&v), pad = 20 - name.len());
        println!(
            "berth/{name} (medians):                   {:.3}",
            median(&get(Way::Run)).as_secs_f64() / median(&v).as_secs_f64()
        );
    }
    if oci.is_empty() {
        println!("runc, crun: not installed, no comparison");
    }

    // The shim's resident memory while a container runs.
    let spec = spec_for(&["/bin/sleep", "5"]);
    let st = runtime.run(&spec).expect("run");
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", st.shim_pid)).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "berth-shim resident memory: {:.2} MiB (VmRSS; anonymous {:.2} MiB, file-backed {:.2} MiB)",
        kib("VmRSS:") as f64 / 1024.0,
        kib("RssAnon:") as f64 / 1024.0,
        kib("RssFile:") as f64 / 1024.0
    );
    runtime.remove(&spec.id, true).expect("remove");

    if let Ok(path) = std::env::var("BENCH_JSON") {
        let row = |v: &[Duration]| {
            let mut s: Vec<f64> = v.iter().copied().map(ms).collect();
            s.sort_by(f64::total_cmp);
            serde_json::json!({
                "median": ms(median(v)), "min": s.first(), "max": s.last(), "samples": s
            })
        };
        let mut peers = serde_json::Map::new();
        for (n, (name, _)) in oci.iter().enumerate() {
            peers.insert(name.to_string(), row(&get(Way::Oci(n))));
        }
        let out = serde_json::json!({
            "runs": runs,
            "berth_run": row(&get(Way::Run)),
            "berth_create_start": row(&get(Way::CreateStart)),
            "berth_network": row(&get(Way::Network)),
            "berth_remove": row(&removes),
            "oci": peers,
            "shim_rss_kib": kib("VmRSS:"),
        });
        std::fs::write(&path, out.to_string()).expect("write BENCH_JSON");
    }
}

/// One berth container of `/bin/true` from start to exit; returns that time and the time of
/// its removal (not timed: the network's detach).
fn start_to_exit(
    runtime: &Runtime,
    nets: &Networks,
    mut spec: ContainerSpec,
    way: Way,
) -> (Duration, Option<Duration>) {
    let t = Instant::now();
    match way {
        Way::CreateStart => {
            runtime.create(&spec).expect("create");
            runtime.start(&spec.id).expect("start");
        }
        Way::Network => {
            let att = nets
                .attach(&AttachRequest {
                    container_id: spec.id.clone(),
                    container_name: spec.name.clone(),
                    hostname: spec.hostname.clone(),
                    mode: NetMode::Bridge(vec![EndpointRequest {
                        network: "benchstart_default".into(),
                        aliases: vec!["bench".into()],
                        ..EndpointRequest::default()
                    }]),
                    ports: vec![],
                    extra_hosts: vec![],
                    dns: vec![],
                    dns_search: vec![],
                    dns_opt: vec![],
                    sysctls: Default::default(),
                })
                .expect("attach");
            spec.namespaces.net = NetNamespace::Path(att.netns_path.expect("a netns"));
            spec.etc_files = EtcFiles {
                hosts: Some(att.hosts_file),
                resolv_conf: Some(att.resolv_conf),
                hostname: Some(att.hostname_file),
            };
            runtime.run(&spec).expect("run");
        }
        _ => {
            runtime.run(&spec).expect("run");
        }
    }
    let st = runtime.wait(&spec.id, Duration::from_secs(10)).expect("wait");
    let elapsed = t.elapsed();
    assert_eq!((st.state, st.exit_code), (State::Exited, Some(0)), "{st:?}");
    let t = Instant::now();
    runtime.remove(&spec.id, true).expect("remove");
    let removed = t.elapsed();
    if way == Way::Network {
        nets.detach(&spec.id).expect("detach");
    }
    (elapsed, (way == Way::Run).then_some(removed))
}

/// Whether `runc run` (or crun) of the bundle succeeds.
fn oci_try(bin: &str, bundle: &Path, state: &Path, i: usize) -> bool {
    Command::new(bin)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("berth-bench-{}-{i}", std::process::id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

/// `runc run` (or crun) of the bundle, from spawn to exit.
fn oci_run(bin: &str, bundle: &Path, state: &PathBuf, i: usize) -> Duration {
    let t = Instant::now();
    let st = Command::new(bin)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("berth-bench-{}-{i}", std::process::id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("spawn the OCI runtime");
    let elapsed = t.elapsed();
    assert!(st.success(), "{bin} run failed: {st}");
    elapsed
}

fn which(name: &str) -> Option<String> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
}

/// An OCI runtime config for `/bin/true` in `rootfs` (absolute: runc refuses a symlink), set up
/// as berth sets up a container.
fn oci_config(rootfs: &Path) -> serde_json::Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let nosuid = ["nosuid", "noexec", "nodev"];
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "noNewPrivileges": false
        },
        "root": { "path": rootfs, "readonly": false },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": nosuid },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}
