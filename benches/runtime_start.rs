//! Container start to exit of `/bin/true` (own namespaces including a fresh netns, no network
//! attached), median of many runs, beside `runc run` of the same rootfs when runc is installed;
//! and the shim's resident memory while a container runs. Run as root:
//! `cargo bench --bench runtime_start`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth::runtime::spec::ContainerSpec;
use berth::runtime::{Runtime, State};
use berth::state::Dirs;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir().expect("temp dir");
    let layer = dir.path().join("layer");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("busybox-static is installed");
    std::os::unix::fs::symlink("busybox", layer.join("bin/true")).unwrap();
    std::os::unix::fs::symlink("busybox", layer.join("bin/sleep")).unwrap();
    let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
    let runtime = Runtime::new(&dirs, env!("CARGO_BIN_EXE_berth"));
    let spec_for = |args: &[&str]| {
        let mut s = ContainerSpec {
            id: berth::runtime::new_id(),
            name: "bench".into(),
            hostname: "bench".into(),
            ..ContainerSpec::default()
        };
        s.rootfs.lower_dirs = vec![layer.clone()];
        s.process.args = args.iter().map(|a| a.to_string()).collect();
        s
    };

    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let spec = spec_for(&["/bin/true"]);
        runtime.create(&spec).expect("create");
        let t = Instant::now();
        runtime.start(&spec.id).expect("start");
        let st = runtime.wait(&spec.id, Duration::from_secs(10)).expect("wait");
        let elapsed = t.elapsed();
        assert_eq!((st.state, st.exit_code), (State::Exited, Some(0)));
        if i >= 3 {
            times.push(elapsed);
        }
        runtime.remove(&spec.id, true).expect("remove");
    }
    let berth_median = median(times);
    println!(
        "berth start->exit of /bin/true: median {:.2} ms over {runs} runs",
        berth_median.as_secs_f64() * 1e3
    );

    // The shim's resident memory while a container runs.
    let spec = spec_for(&["/bin/sleep", "5"]);
    let st = runtime.run(&spec).expect("run");
    std::thread::sleep(Duration::from_millis(200));
    let rss = std::fs::read_to_string(format!("/proc/{}/status", st.shim_pid))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    println!("berth-shim resident memory: {:.2} MiB", rss as f64 / 1024.0);
    runtime.remove(&spec.id, true).expect("remove");

    match which_runc() {
        None => println!("runc: not installed, no ratio"),
        Some(runc) => {
            let bundle = dir.path().join("bundle");
            std::fs::create_dir_all(&bundle).unwrap();
            std::os::unix::fs::symlink(&layer, bundle.join("rootfs")).unwrap();
            let out = Command::new(&runc).arg("spec").current_dir(&bundle).output().expect("runc spec");
            assert!(out.status.success());
            let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
            let config = config
                .replace("\"sh\"", "\"/bin/true\"")
                .replace("\"terminal\": true", "\"terminal\": false");
            std::fs::write(bundle.join("config.json"), config).unwrap();
            let mut times = Vec::new();
            for i in 0..runs + 3 {
                let t = Instant::now();
                let st = Command::new(&runc)
                    .args(["run", &format!("berth-bench-{i}")])
                    .current_dir(&bundle)
                    .status()
                    .expect("runc run");
                if i >= 3 && st.success() {
                    times.push(t.elapsed());
                }
            }
            let runc_median = median(times);
            println!(
                "runc run of /bin/true: median {:.2} ms; berth/runc = {:.2}",
                runc_median.as_secs_f64() * 1e3,
                berth_median.as_secs_f64() / runc_median.as_secs_f64()
            );
        }
    }
}

fn which_runc() -> Option<String> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(String::from)
}
