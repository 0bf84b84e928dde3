//! `berth stats`: the resource use of the project's containers, as `docker stats` shows it
//! (docker compose runs docker's own): CPU % over the last second, memory usage / limit and %,
//! network and block I/O, pids. A live view refreshed each second (redrawn in place on a
//! terminal; Ctrl-C ends it), or one reading with `--no-stream`; `--format table|json|TEMPLATE`
//! with docker's field names.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::output::out;
use super::template::FormatSpec;
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::observe::{ProjectContainer, is_running};
use crate::engine::query::{self, Selection, States};
use crate::runtime::cgroups::Cgroup;
use crate::runtime::stats::{HostInfo, Sample, sample};
use crate::runtime::syscall::Linux;

/// `berth stats` flags.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json' or 'TEMPLATE'
    #[arg(long, default_value = "")]
    format: String,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Services (default: all)
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
}

/// docker's default stats table.
const DEFAULT_TABLE: &str =
    "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// docker's column titles of the fields.
const TITLES: [(&str, &str); 9] = [
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
    ("Container", "CONTAINER"),
];

/// One container's line, with docker's field names (in `{{json .}}`'s order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// `1.2MB / 300kB`.
    #[serde(rename = "BlockIO")]
    pub block_io: String,
    /// `0.05%`.
    #[serde(rename = "CPUPerc")]
    pub cpu_perc: String,
    /// The container's short id, as docker compose passes it to docker's stats.
    #[serde(rename = "Container")]
    pub container: String,
    /// The id (12 digits unless `--no-trunc`).
    #[serde(rename = "ID")]
    pub id: String,
    /// `0.12%`.
    #[serde(rename = "MemPerc")]
    pub mem_perc: String,
    /// `1.5MiB / 7.6GiB`.
    #[serde(rename = "MemUsage")]
    pub mem_usage: String,
    /// The container's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `1.05kB / 0B`.
    #[serde(rename = "NetIO")]
    pub net_io: String,
    /// `1`.
    #[serde(rename = "PIDs")]
    pub pids: String,
}

impl Entry {
    /// The line of container `id` named `name` for reading `now` after `before`.
    pub fn new(id: &str, name: &str, now: &Sample, before: &Sample, no_trunc: bool) -> Entry {
        let short: String = id.chars().take(12).collect();
        Entry {
            block_io: format!("{} / {}", decimal_size(now.blk_read), decimal_size(now.blk_write)),
            cpu_perc: format!("{:.2}%", now.cpu_percent(before)),
            container: short.clone(),
            id: if no_trunc { id.to_string() } else { short },
            mem_perc: format!("{:.2}%", now.mem_percent()),
            mem_usage: format!("{} / {}", binary_size(now.mem_usage), binary_size(now.mem_limit)),
            name: name.to_string(),
            net_io: format!("{} / {}", decimal_size(now.net_rx), decimal_size(now.net_tx)),
            pids: now.pids.to_string(),
        }
    }
}

/// Go's `%.<p>g`: `p` significant digits, trailing zeros dropped, an exponent when the number
/// is too large or small for them.
pub fn go_g(v: f64, p: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let p = p.max(1);
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= p as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

fn scaled(size: u64, base: f64, units: &[&str], precision: usize) -> String {
    let mut v = size as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    format!("{}{}", go_g(v, precision), units[i])
}

/// go-units' `BytesSize`: binary units, 4 significant digits (`1.5MiB`, `7.613GiB`).
pub fn binary_size(size: u64) -> String {
    scaled(size, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], 4)
}

/// go-units' `HumanSizeWithPrecision(size, 3)`: decimal units (`1.05kB`, `473MB`).
pub fn decimal_size(size: u64) -> String {
    scaled(size, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"], 3)
}

/// Lines of tab-separated cells aligned as Go's tabwriter aligns them: each column as wide as
/// its widest cell plus `padding`, at least `min_width`; the last cell of a line unpadded.
pub fn tabwrite(rows: &[Vec<String>], min_width: usize, padding: usize) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (cell.chars().count() + padding).max(min_width);
            if i >= widths.len() {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
            }
        }
        out.push('\n');
    }
    out
}

/// How the entries are printed.
enum Shape {
    /// A table (docker's default, or `table TEMPLATE`): the template and its header row.
    Table { template: super::template::Template, header: String },
    /// One JSON object per line.
    Json,
    /// A template, one rendering per line.
    Template(super::template::Template),
}

fn shape(format: &str) -> CliResult<Shape> {
    let bad = |e: super::template::TemplateError| CliError::context("stats --format", e);
    Ok(match FormatSpec::parse(format).map_err(bad)? {
        FormatSpec::Table => Shape::Table {
            template: super::template::Template::parse(DEFAULT_TABLE).map_err(bad)?,
            header: FormatSpec::header(DEFAULT_TABLE, &TITLES),
        },
        FormatSpec::Json => Shape::Json,
        FormatSpec::Template { template, header: true, text } => {
            Shape::Table { template, header: FormatSpec::header(&text, &TITLES) }
        }
        FormatSpec::Template { template, header: false, .. } => Shape::Template(template),
    })
}

/// The text of one reading of `entries`.
fn render(shape: &Shape, entries: &[Entry]) -> CliResult<String> {
    let value = |e: &Entry| serde_json::to_value(e).map_err(|err| CliError::msg(err.to_string()));
    let fail = |e: super::template::TemplateError| CliError::context("stats --format", e);
    match shape {
        Shape::Json => {
            let mut out = String::new();
            for e in entries {
                out.push_str(&value(e)?.to_string());
                out.push('\n');
            }
            Ok(out)
        }
        Shape::Template(t) => {
            let mut out = String::new();
            for e in entries {
                out.push_str(&t.render(&value(e)?).map_err(fail)?);
                out.push('\n');
            }
            Ok(out)
        }
        Shape::Table { template, header } => {
            let mut lines = vec![header.clone()];
            for e in entries {
                lines.push(template.render(&value(e)?).map_err(fail)?);
            }
            let rows: Vec<Vec<String>> =
                lines.iter().map(|l| l.split('\t').map(str::to_string).collect()).collect();
            Ok(tabwrite(&rows, 10, 3))
        }
    }
}

/// Runs `berth stats`.
pub fn run(global: &GlobalOptions, args: &StatsArgs) -> CliResult<()> {
    let shape = shape(&args.format)?;
    let target = super::project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let host = HostInfo::read(&Linux);
    let states = if args.all { States::Any } else { States::Watched };
    let selection =
        Selection { services: args.services.clone(), oneoffs: true, states, ..Selection::default() };
    let containers = || -> CliResult<Vec<(ProjectContainer, i32)>> {
        Ok(query::select(target.engine.host().containers, &target.name, &selection)?
            .into_iter()
            .map(|l| {
                let pid = if is_running(&l.status) { l.status.pid } else { 0 };
                (l.container, pid)
            })
            .collect())
    };
    let read = |list: &[(ProjectContainer, i32)]| -> BTreeMap<String, Sample> {
        list.iter()
            .map(|(c, pid)| {
                let s = if *pid > 0 {
                    sample(&Linux, &Cgroup::for_container(&c.id), *pid, &host)
                } else {
                    Sample::default()
                };
                (c.id.clone(), s)
            })
            .collect()
    };
    let tty = !args.no_stream && std::io::stdout().is_terminal();
    signals::install();
    let mut previous = read(&containers()?);
    loop {
        // One second between readings, as docker's daemon samples; Ctrl-C ends the wait.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if signals::interrupts() > 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let list = containers()?;
        let now = read(&list);
        let entries: Vec<Entry> = list
            .iter()
            .map(|(c, _)| {
                let cur = now.get(&c.id).copied().unwrap_or_default();
                // A container new since the last reading: its CPU % from this one on.
                let before = previous.get(&c.id).copied().unwrap_or(cur);
                Entry::new(&c.id, &c.name, &cur, &before, args.no_trunc)
            })
            .collect();
        let text = render(&shape, &entries)?;
        if tty {
            // Home, the new frame with each line's rest cleared, then the rest of the screen.
            let frame: String = text.lines().map(|l| format!("{l}\x1b[K\n")).collect();
            out!("\x1b[H{frame}\x1b[J")?;
        } else {
            out!("{text}")?;
        }
        if args.no_stream {
            return Ok(());
        }
        previous = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_go_units_does() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1024), "1KiB");
        assert_eq!(binary_size(1_572_864), "1.5MiB");
        assert_eq!(binary_size(741_619_712), "707.3MiB");
        assert_eq!(binary_size(8_174_485_504), "7.613GiB");
        assert_eq!(decimal_size(0), "0B");
        assert_eq!(decimal_size(1050), "1.05kB");
        assert_eq!(decimal_size(473_000_000), "473MB");
        assert_eq!(decimal_size(1_100_000_000), "1.1GB");
        assert_eq!(decimal_size(999_999), "1e+03kB");
        assert_eq!(go_g(0.000012345, 3), "1.23e-05");
        assert_eq!(go_g(123.0, 4), "123");
    }

    #[test]
    fn entries_tables_and_json_use_dockers_fields() {
        let id = "9db408e1b7b7aaaabbbbccccddddeeeeffff0000111122223333444455556666";
        let before = Sample { cpu_ns: 0, system_ns: 1_000_000_000, online_cpus: 2, ..Sample::default() };
        let now = Sample {
            cpu_ns: 5_000_000,
            system_ns: 2_000_000_000,
            online_cpus: 2,
            mem_usage: 1_572_864,
            mem_limit: 8 << 30,
            net_rx: 1050,
            net_tx: 0,
            blk_read: 4096,
            blk_write: 0,
            pids: 1,
        };
        let e = Entry::new(id, "p-web-1", &now, &before, false);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"BlockIO":"4.1kB / 0B","CPUPerc":"1.00%","Container":"9db408e1b7b7","ID":"9db408e1b7b7","MemPerc":"0.02%","MemUsage":"1.5MiB / 8GiB","Name":"p-web-1","NetIO":"1.05kB / 0B","PIDs":"1"}"#
        );
        assert_eq!(Entry::new(id, "x", &now, &before, true).id, id);
        let table = render(&shape("").unwrap(), std::slice::from_ref(&e)).unwrap();
        assert_eq!(
            table,
            "CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT   MEM %     NET I/O       BLOCK I/O    PIDS\n\
             9db408e1b7b7   p-web-1   1.00%     1.5MiB / 8GiB       0.02%     1.05kB / 0B   4.1kB / 0B   1\n"
        );
        let json = render(&shape("json").unwrap(), std::slice::from_ref(&e)).unwrap();
        assert_eq!(json.lines().count(), 1);
        let t = render(&shape("{{.Name}}: {{.MemUsage}}").unwrap(), &[e.clone(), e.clone()]).unwrap();
        assert_eq!(t, "p-web-1: 1.5MiB / 8GiB\np-web-1: 1.5MiB / 8GiB\n");
        let t = render(&shape("table {{.Container}}\t{{.PIDs}}").unwrap(), &[e]).unwrap();
        assert_eq!(t, "CONTAINER      PIDS\n9db408e1b7b7   1\n");
        assert!(shape("{{.Name").is_err());
    }

    #[test]
    fn tabwriter_pads_like_go() {
        let rows =
            vec![vec!["a".to_string(), "bb".into(), "c".into()], vec!["dddd".into(), "e".into(), "f".into()]];
        assert_eq!(tabwrite(&rows, 4, 2), "a     bb  c\ndddd  e   f\n");
    }
}
