//! `berth top`: the processes of the project's running containers, one table with a `SERVICE`
//! and `#` (replica) column before `ps -ef`'s columns (`UID PID PPID C STIME TTY TIME CMD`),
//! as docker compose prints it. The processes are the host pids in each container's cgroup,
//! read from the host's `/proc` as `ps` would read them.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::events::local;
use super::output::out;
use super::stats::tabwrite;
use super::{CliResult, GlobalOptions};
use crate::engine::query::{self, Selection, States};
use crate::runtime::cgroups::Cgroup;
use crate::runtime::stats::{HostInfo, ProcInfo, read_proc, uptime};
use crate::runtime::syscall::{Linux, Syscall};

/// `berth top` flags.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Services (default: all)
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
}

/// What `ps` needs of the host to word a process.
pub(crate) struct PsContext {
    /// Clock ticks per second.
    pub ticks: u64,
    /// Seconds since boot.
    pub uptime: f64,
    /// Now.
    pub now: SystemTime,
    /// User names by uid (the host's).
    pub users: HashMap<u32, String>,
}

impl PsContext {
    fn read(sys: &dyn Syscall) -> PsContext {
        PsContext {
            ticks: HostInfo::read(sys).clock_ticks,
            uptime: uptime(sys),
            now: SystemTime::now(),
            users: sys.read(Path::new("/etc/passwd")).map(|t| passwd_names(&t)).unwrap_or_default(),
        }
    }
}

/// uid → name from a passwd file.
pub(crate) fn passwd_names(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// `ps -ef`'s columns for process `p`: UID, PID, PPID, C, STIME, TTY, TIME, CMD.
pub(crate) fn ps_row(p: &ProcInfo, ctx: &PsContext) -> [String; 8] {
    let user = match ctx.users.get(&p.uid) {
        // procps cuts a name wider than its column and marks it with `+`.
        Some(name) if name.chars().count() > 8 => format!("{}+", name.chars().take(7).collect::<String>()),
        Some(name) => name.clone(),
        None => p.uid.to_string(),
    };
    let ticks = ctx.ticks.max(1);
    let started = p.start_ticks / ticks;
    let age = ctx.uptime - started as f64;
    // procps: tenths of a percent of the CPU time over the process's life, shown as a whole
    // percent, at most 99.
    let c = if age >= 1.0 { (p.cpu_ticks * 1000 / ticks) as f64 / age / 10.0 } else { 0.0 };
    // From the process's age rather than the boot time (`btime`), which a clock stepped
    // since boot (NTP, a resumed VM) makes wrong.
    let start = ctx.now.checked_sub(Duration::from_secs_f64(age.max(0.0))).unwrap_or(ctx.now);
    [
        user,
        p.pid.to_string(),
        p.ppid.to_string(),
        (c as u64).min(99).to_string(),
        stime(start, ctx.now),
        tty_name(p.tty),
        cputime(p.cpu_ticks / ticks),
        p.cmd.clone(),
    ]
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `ps`'s STIME: `HH:MM` for a process started today, `MonDD` this year, the year before.
fn stime(start: SystemTime, now: SystemTime) -> String {
    let (s, n) = (local(start), local(now));
    if (s.year, s.month, s.day) == (n.year, n.month, n.day) {
        format!("{:02}:{:02}", s.hour, s.minute)
    } else if s.year == n.year {
        format!("{}{:02}", MONTHS[(s.month as usize).clamp(1, 12) - 1], s.day)
    } else {
        s.year.to_string()
    }
}

/// `ps`'s TIME: `[DD-]HH:MM:SS` of CPU time.
fn cputime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 { format!("{d}-{h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}:{s:02}") }
}

/// `ps`'s TTY from `tty_nr`: `pts/N`, `ttyN`, `ttySN`, or `?`.
fn tty_name(tty: u64) -> String {
    let major = (tty >> 8) & 0xfff;
    let minor = (tty & 0xff) | ((tty >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", minor + (major - 136) * 256),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => "?".to_string(),
    }
}

/// Runs `berth top`.
pub fn run(global: &GlobalOptions, args: &TopArgs) -> CliResult<()> {
    let target = super::project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let selection = Selection {
        services: args.services.clone(),
        oneoffs: true,
        states: States::Watched,
        ..Selection::default()
    };
    let mut containers: Vec<_> = query::select(target.engine.host().containers, &target.name, &selection)?
        .into_iter()
        .map(|l| l.container)
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let ctx = PsContext::read(&Linux);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in &containers {
        let mut pids = Cgroup::for_container(&c.id).processes(&Linux);
        pids.sort_unstable();
        for proc in pids.into_iter().filter_map(|pid| read_proc(&Linux, pid)) {
            let mut row = vec![c.service.clone(), c.number.to_string()];
            row.extend(ps_row(&proc, &ctx));
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let header = ["SERVICE", "#", "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
    rows.insert(0, header.iter().map(|h| h.to_string()).collect());
    out!("{}", tabwrite(&rows, 4, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rows_read_like_ps_ef() {
        // SAFETY: this module's tests set TZ alike.
        unsafe { std::env::set_var("TZ", "UTC") };
        let now = UNIX_EPOCH + Duration::from_secs(1_704_110_400); // 2024-01-01 12:00 UTC
        let ctx = PsContext {
            ticks: 100,
            uptime: 1000.0,
            now,
            users: passwd_names(
                "root:x:0:0:root:/root:/bin/sh\nsystemd-network:x:101:102::/:/bin/false\nbad\n",
            ),
        };
        let p = ProcInfo {
            pid: 4242,
            ppid: 4200,
            uid: 0,
            tty: 0,
            // 50 s of CPU over 500 s of life: 10%.
            cpu_ticks: 5000,
            start_ticks: 50_000,
            cmd: "sleep 300".into(),
        };
        assert_eq!(ps_row(&p, &ctx), ["root", "4242", "4200", "10", "11:51", "?", "00:00:50", "sleep 300"]);
        let other = ProcInfo { uid: 101, tty: (136 << 8) | 3, cpu_ticks: 100 * 90_061, ..p.clone() };
        let row = ps_row(&other, &ctx);
        assert_eq!((row[0].as_str(), row[5].as_str(), row[6].as_str()), ("systemd+", "pts/3", "1-01:01:01"));
        assert_eq!(ps_row(&ProcInfo { uid: 1234, ..p }, &ctx)[0], "1234");
        let day = 86_400;
        let july = UNIX_EPOCH + Duration::from_secs(1_719_835_200); // 2024-07-01 12:00 UTC
        assert_eq!(stime(july - Duration::from_secs(40 * day), july), "May22");
        assert_eq!(stime(july - Duration::from_secs(400 * day), july), "2023");
        assert_eq!(tty_name(4 << 8 | 1), "tty1");
        assert_eq!(tty_name(4 << 8 | 65), "ttyS1");
    }
}
