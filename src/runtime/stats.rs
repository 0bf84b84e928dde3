//! What a running container uses, read where docker's daemon reads it: CPU, memory, block I/O
//! and pids from its cgroup (v1 or v2), network I/O from its network namespace's
//! `/proc/<pid>/net/dev`, the host's CPU time from `/proc/stat`; and its processes, from
//! `/proc/<pid>/{stat,status,cmdline}` for the host pids in its cgroup (for `top`). Every file
//! is read through a [`Syscall`], so the parsing is tested on fixtures of both cgroup versions.

use std::path::Path;

use super::cgroups::{Cgroup, Version};
use super::syscall::Syscall;

/// Facts about the host that the figures are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostInfo {
    /// Clock ticks per second (`/proc/stat` and `/proc/<pid>/stat` count in them).
    pub clock_ticks: u64,
    /// CPUs online.
    pub online_cpus: u32,
    /// Total memory in bytes (the limit shown for a container without one).
    pub mem_total: u64,
}

impl HostInfo {
    /// This host's.
    pub fn read(sys: &dyn Syscall) -> HostInfo {
        // SAFETY: sysconf reads a constant of the system.
        let (ticks, cpus) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_NPROCESSORS_ONLN)) };
        HostInfo {
            clock_ticks: u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100),
            online_cpus: u32::try_from(cpus).ok().filter(|c| *c > 0).unwrap_or(1),
            mem_total: sys.read(Path::new("/proc/meminfo")).ok().and_then(|t| meminfo_total(&t)).unwrap_or(0),
        }
    }
}

/// One reading of a container's use of resources (all counters are totals since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU time the container used, in nanoseconds.
    pub cpu_ns: u64,
    /// CPU time the whole host used (busy and idle), in nanoseconds, as docker counts it.
    pub system_ns: u64,
    /// CPUs online.
    pub online_cpus: u32,
    /// Memory in use, not counting inactive file cache (docker's figure).
    pub mem_usage: u64,
    /// The memory limit (the host's memory when there is none, or when it is larger).
    pub mem_limit: u64,
    /// Bytes received over its network interfaces (loopback aside).
    pub net_rx: u64,
    /// Bytes sent.
    pub net_tx: u64,
    /// Bytes read from block devices.
    pub blk_read: u64,
    /// Bytes written to block devices.
    pub blk_write: u64,
    /// Processes (and threads) in the cgroup.
    pub pids: u64,
}

impl Sample {
    /// CPU % between two readings as docker computes it: the container's CPU time over the
    /// host's, times the CPUs online, in percent; 0 when either did not advance.
    pub fn cpu_percent(&self, previous: &Sample) -> f64 {
        let cpu = self.cpu_ns.saturating_sub(previous.cpu_ns) as f64;
        let system = self.system_ns.saturating_sub(previous.system_ns) as f64;
        if cpu > 0.0 && system > 0.0 {
            cpu / system * f64::from(self.online_cpus.max(1)) * 100.0
        } else {
            0.0
        }
    }

    /// Memory use in percent of the limit.
    pub fn mem_percent(&self) -> f64 {
        if self.mem_limit == 0 { 0.0 } else { self.mem_usage as f64 / self.mem_limit as f64 * 100.0 }
    }
}

fn read(sys: &dyn Syscall, dir: &Path, file: &str) -> Option<String> {
    sys.read(&dir.join(file)).ok()
}

fn number(text: Option<String>) -> Option<u64> {
    text?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`: `key value` lines).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

/// Reads the container's figures: its cgroup's, its network namespace's (seen through its
/// first process `pid`; none when 0), and the host's CPU time.
pub fn sample(sys: &dyn Syscall, cgroup: &Cgroup, pid: i32, host: &HostInfo) -> Sample {
    let mut s = Sample { online_cpus: host.online_cpus, ..Sample::default() };
    s.system_ns = sys
        .read(Path::new("/proc/stat"))
        .ok()
        .and_then(|t| system_ticks(&t))
        .map_or(0, |ticks| ticks.saturating_mul(1_000_000_000) / host.clock_ticks.max(1));
    let v2 = cgroup.version() == Version::V2;
    if let Some(dir) = cgroup.controller_dir(if v2 { "cpu" } else { "cpuacct" }) {
        s.cpu_ns = if v2 {
            read(sys, dir, "cpu.stat").and_then(|t| keyed(&t, "usage_usec")).unwrap_or(0).saturating_mul(1000)
        } else {
            number(read(sys, dir, "cpuacct.usage")).unwrap_or(0)
        };
    }
    if let Some(dir) = cgroup.controller_dir("memory") {
        let (usage, limit, inactive) = if v2 {
            (
                number(read(sys, dir, "memory.current")),
                // `max` reads as no number: no limit.
                number(read(sys, dir, "memory.max")),
                read(sys, dir, "memory.stat").and_then(|t| keyed(&t, "inactive_file")),
            )
        } else {
            (
                number(read(sys, dir, "memory.usage_in_bytes")),
                number(read(sys, dir, "memory.limit_in_bytes")),
                read(sys, dir, "memory.stat").and_then(|t| keyed(&t, "total_inactive_file")),
            )
        };
        let usage = usage.unwrap_or(0);
        // docker: the usage without the inactive page cache, which the kernel reclaims first.
        s.mem_usage = match inactive {
            Some(i) if i < usage => usage - i,
            _ => usage,
        };
        s.mem_limit = match limit {
            Some(l) if host.mem_total == 0 || l < host.mem_total => l,
            _ => host.mem_total,
        };
    }
    if let Some(dir) = cgroup.controller_dir(if v2 { "io" } else { "blkio" }) {
        (s.blk_read, s.blk_write) = if v2 {
            read(sys, dir, "io.stat").map(|t| io_stat(&t)).unwrap_or_default()
        } else {
            // The CFQ scheduler's file is empty (or gone) with blk-mq; the throttle one counts.
            let cfq = read(sys, dir, "blkio.io_service_bytes_recursive").and_then(|t| blkio_v1(&t));
            cfq.or_else(|| {
                read(sys, dir, "blkio.throttle.io_service_bytes_recursive").and_then(|t| blkio_v1(&t))
            })
            .unwrap_or_default()
        };
    }
    if let Some(dir) = cgroup.controller_dir("pids") {
        s.pids = number(read(sys, dir, "pids.current")).unwrap_or(0);
    }
    if pid > 0 {
        (s.net_rx, s.net_tx) = sys
            .read(&Path::new("/proc").join(pid.to_string()).join("net/dev"))
            .map(|t| net_dev(&t))
            .unwrap_or_default();
    }
    s
}

/// The host's CPU time in clock ticks from `/proc/stat`'s `cpu` line: user, nice, system,
/// idle, iowait, irq and softirq, the fields docker adds up.
pub fn system_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).take(7).filter_map(|f| f.parse().ok()).collect();
    (fields.len() == 7).then(|| fields.iter().sum())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes received and sent over every interface of `/proc/<pid>/net/dev` but loopback.
pub fn net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() >= 9 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}

/// Bytes read and written from a v1 `blkio.*io_service_bytes_recursive` (`8:0 Read 4096`
/// lines; the `Total` lines aside); `None` when it has no device line.
pub fn blkio_v1(text: &str) -> Option<(u64, u64)> {
    let mut found = false;
    let (mut r, mut w) = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, op, value] = f[..] else { continue };
        let Ok(v) = value.parse::<u64>() else { continue };
        found = true;
        match op.to_ascii_lowercase().as_str() {
            "read" => r = r.saturating_add(v),
            "write" => w = w.saturating_add(v),
            _ => {}
        }
    }
    found.then_some((r, w))
}

/// Bytes read and written from a v2 `io.stat` (`8:0 rbytes=4096 wbytes=0 ...` lines).
pub fn io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=").and_then(|v| v.parse::<u64>().ok()) {
            r = r.saturating_add(v);
        } else if let Some(v) = field.strip_prefix("wbytes=").and_then(|v| v.parse::<u64>().ok()) {
            w = w.saturating_add(v);
        }
    }
    (r, w)
}

/// One process, as `ps -ef` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Host pid.
    pub pid: i32,
    /// Parent's host pid.
    pub ppid: i32,
    /// Real user id.
    pub uid: u32,
    /// Controlling terminal (`tty_nr`: major and minor), 0 for none.
    pub tty: u64,
    /// CPU time in user and kernel mode, in clock ticks.
    pub cpu_ticks: u64,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
    /// Its command line (`[name]` when it has none, as a kernel thread).
    pub cmd: String,
}

/// Parses `/proc/<pid>/stat` (the name in parentheses may hold spaces and parentheses),
/// `/proc/<pid>/status` (for the real uid) and `/proc/<pid>/cmdline`.
pub fn parse_proc(pid: i32, stat: &str, status: &str, cmdline: &[u8]) -> Option<ProcInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // Fields after the name, from field 3 (state) on.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    let ppid = rest.get(1)?.parse().ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cmd = if args.is_empty() { format!("[{comm}]") } else { args.join(" ") };
    Some(ProcInfo {
        pid,
        ppid,
        uid,
        tty: field(7)?,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
        cmd,
    })
}

/// Reads process `pid` from `/proc`; `None` when it is gone.
pub fn read_proc(sys: &dyn Syscall, pid: i32) -> Option<ProcInfo> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = sys.read(&dir.join("stat")).ok()?;
    let status = sys.read(&dir.join("status")).unwrap_or_default();
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    parse_proc(pid, &stat, &status, &cmdline)
}

/// The host's uptime in seconds (`/proc/uptime`).
pub fn uptime(sys: &dyn Syscall) -> f64 {
    sys.read(Path::new("/proc/uptime"))
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::Recorder;

    const HOST: HostInfo = HostInfo { clock_ticks: 100, online_cpus: 2, mem_total: 8 << 30 };
    const PROC_STAT: &str = "cpu  100 5 50 800 20 3 2 7 0 0\ncpu0 50 2 25 400 10 1 1 3 0 0\nbtime 1\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
         eth0:    5000      40    0    0    0     0          0         0     2500      20    0    0    0     0       0          0\n";

    fn v1() -> Cgroup {
        Cgroup::v1(
            Path::new("/cg"),
            "c1",
            &[("memory", "memory"), ("cpu", "cpu,cpuacct"), ("blkio", "blkio"), ("pids", "pids")],
        )
    }

    #[test]
    fn v1_figures_come_from_the_v1_files() {
        let sys = Recorder::default();
        sys.file("/proc/stat", PROC_STAT);
        sys.file("/proc/42/net/dev", NET_DEV);
        sys.file("/cg/cpu/berth/c1/cpuacct.usage", "123456789\n");
        sys.file("/cg/memory/berth/c1/memory.usage_in_bytes", "10485760\n");
        sys.file("/cg/memory/berth/c1/memory.limit_in_bytes", "9223372036854771712\n");
        sys.file(
            "/cg/memory/berth/c1/memory.stat",
            "cache 0\ninactive_file 7\ntotal_inactive_file 1048576\n",
        );
        sys.file("/cg/blkio/berth/c1/blkio.io_service_bytes_recursive", "Total 0\n");
        sys.file(
            "/cg/blkio/berth/c1/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n",
        );
        sys.file("/cg/pids/berth/c1/pids.current", "3\n");
        let s = sample(&sys, &v1(), 42, &HOST);
        assert_eq!(
            s,
            Sample {
                cpu_ns: 123_456_789,
                // 100+5+50+800+20+3+2 ticks (steal and guest aside), at 100 per second.
                system_ns: 9_800_000_000,
                online_cpus: 2,
                mem_usage: 9 << 20,
                // No limit: the host's memory.
                mem_limit: 8 << 30,
                net_rx: 5000,
                net_tx: 2500,
                blk_read: 4097,
                blk_write: 8192,
                pids: 3,
            }
        );
        assert_eq!(v1().controller_dir("cpuacct"), Some(Path::new("/cg/cpu/berth/c1")));
    }

    #[test]
    fn v2_figures_come_from_the_unified_files() {
        let sys = Recorder::default();
        sys.file("/proc/stat", PROC_STAT);
        let dir = "/cg/berth/c1";
        sys.file(format!("{dir}/cpu.stat"), "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
        sys.file(format!("{dir}/memory.current"), "4194304\n");
        sys.file(format!("{dir}/memory.max"), "67108864\n");
        sys.file(format!("{dir}/memory.stat"), "anon 1\nfile 2\ninactive_file 1048576\n");
        sys.file(
            format!("{dir}/io.stat"),
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2\n",
        );
        sys.file(format!("{dir}/pids.current"), "1\n");
        let s = sample(&sys, &Cgroup::v2(Path::new("/cg"), "c1"), 0, &HOST);
        assert_eq!((s.cpu_ns, s.mem_usage, s.mem_limit), (2_500_000, 3 << 20, 64 << 20));
        assert_eq!((s.blk_read, s.blk_write, s.pids, s.net_rx), (101, 202, 1, 0));
        sys.file(format!("{dir}/memory.max"), "max\n");
        assert_eq!(sample(&sys, &Cgroup::v2(Path::new("/cg"), "c1"), 0, &HOST).mem_limit, 8 << 30);
        // A cgroup that is gone reads as zeros.
        let empty = Recorder::default();
        assert_eq!(sample(&empty, &Cgroup::v2(Path::new("/cg"), "c1"), 0, &HOST).mem_usage, 0);
    }

    #[test]
    fn cpu_percent_is_dockers() {
        let a =
            Sample { cpu_ns: 1_000_000_000, system_ns: 10_000_000_000, online_cpus: 2, ..Sample::default() };
        // Half a CPU second over 2 host seconds (1 s wall on 2 CPUs): 50% of one CPU.
        let b = Sample { cpu_ns: 1_500_000_000, system_ns: 12_000_000_000, ..a };
        assert!((b.cpu_percent(&a) - 50.0).abs() < 1e-9, "{}", b.cpu_percent(&a));
        assert_eq!(a.cpu_percent(&a), 0.0);
        assert_eq!(a.cpu_percent(&b), 0.0);
        let m = Sample { mem_usage: 1 << 20, mem_limit: 4 << 20, ..a };
        assert_eq!(m.mem_percent(), 25.0);
        assert_eq!(Sample::default().mem_percent(), 0.0);
    }

    #[test]
    fn proc_files_parse_like_ps_reads_them() {
        let stat =
            "42 (my (odd) name) S 7 42 42 34816 42 4194560 100 0 0 0 150 25 0 0 20 0 1 0 5000 1000000 100\n";
        let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        let p = parse_proc(42, stat, status, b"sleep\x00300\x00").unwrap();
        assert_eq!(
            p,
            ProcInfo {
                pid: 42,
                ppid: 7,
                uid: 1000,
                tty: 34816,
                cpu_ticks: 175,
                start_ticks: 5000,
                cmd: "sleep 300".into()
            }
        );
        assert_eq!(parse_proc(2, stat, "", b"").unwrap().cmd, "[my (odd) name]");
        assert_eq!(parse_proc(2, "garbage", "", b"").map(|p| p.pid), None);
        assert_eq!(meminfo_total("MemTotal:       8000 kB\nMemFree: 1 kB\n"), Some(8_192_000));
        assert_eq!(system_ticks("cpu 1 2\n"), None);
        assert_eq!(blkio_v1("Total 0\n"), None);
    }
}
