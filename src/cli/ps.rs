//! `berth ps`: the project's containers, as docker compose lists them: its table, its JSON
//! (one object per line, the fields and types of docker compose v2.21+), or a Go template.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use super::output::{out, outln};
use super::project::{self, Target};
use super::template::FormatSpec;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::observe::ProjectContainer;
use crate::engine::query::{self, Selection, States};
use crate::netns::record::ModeRecord;
use crate::runtime::spec::MountKind;
use crate::runtime::status::{ContainerStatus, HealthState, State};
use crate::runtime::timefmt::{human_since, parse_rfc3339};

/// `berth ps` flags (docker compose's).
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all stopped containers (including those created by the run command)
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Display services
    #[arg(long)]
    services: bool,
    /// Format output: table, json, or a Go template ({{.Name}}\t{{.Status}}; `table ...` adds a header)
    #[arg(long, default_value = "")]
    format: String,
    /// Filter services by a property: status=STATE, or source=image|build
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Option<String>,
    /// Filter services by status (paused, restarting, removing, running, dead, created, exited; repeatable)
    #[arg(long, value_name = "STATUS")]
    status: Vec<String>,
    /// Include orphaned services (not declared by the project)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    orphans: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Services (default: all)
    #[arg(value_name = "SERVICE")]
    names: Vec<String>,
}

/// One published port, as docker compose's JSON shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Publisher {
    /// Host address (`0.0.0.0` for all).
    #[serde(rename = "URL")]
    pub url: String,
    /// Container port.
    #[serde(rename = "TargetPort")]
    pub target_port: u16,
    /// Host port.
    #[serde(rename = "PublishedPort")]
    pub published_port: u16,
    /// `tcp` or `udp`.
    #[serde(rename = "Protocol")]
    pub protocol: String,
}

/// What `ps` knows of one container (docker compose's `api.ContainerSummary`).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The image it was made from, as the file names it.
    pub image: String,
    /// Entrypoint and command, space-separated.
    pub command: String,
    /// Project.
    pub project: String,
    /// Service.
    pub service: String,
    /// Creation time.
    pub created: Option<SystemTime>,
    /// docker's state word.
    pub state: String,
    /// docker's status text.
    pub status: String,
    /// The health verdict while it runs, else empty.
    pub health: String,
    /// The exit code once it exited, else 0.
    pub exit_code: i32,
    /// Published ports, by container port.
    pub publishers: Vec<Publisher>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Volume names or host paths of its mounts.
    pub mounts: Vec<String>,
    /// How many of its mounts are (local) volumes.
    pub local_volumes: usize,
    /// Networks it is attached to.
    pub networks: Vec<String>,
    /// Bytes in its writable layer, when they were counted.
    pub size_rw: Option<u64>,
}

fn ago(time: Option<&str>) -> String {
    time.map(human_since).unwrap_or_default()
}

/// docker's status text: `Up 5 seconds (healthy)`, `Exited (0) 2 minutes ago`, ...
fn status_text(st: &ContainerStatus) -> String {
    match st.state {
        State::Created => "Created".into(),
        State::Running => {
            let health = match st.health.as_ref().map(|h| h.status) {
                Some(HealthState::Healthy) => " (healthy)",
                Some(HealthState::Unhealthy) => " (unhealthy)",
                Some(HealthState::Starting) => " (health: starting)",
                None => "",
            };
            let paused = if st.paused { " (Paused)" } else { "" };
            format!("Up {}{paused}{health}", ago(st.started_at.as_deref()))
        }
        State::Restarting => {
            format!("Restarting ({}) {} ago", st.exit_code.unwrap_or(0), ago(st.finished_at.as_deref()))
        }
        State::Exited => {
            format!("Exited ({}) {} ago", st.exit_code.unwrap_or(0), ago(st.finished_at.as_deref()))
        }
        State::Dead => "Dead".into(),
    }
}

/// Reads what `ps` shows of container `c` (`size`: count its writable layer's bytes), and
/// whether both its record files were read whole.
fn summary(
    target: &Target,
    images: &BTreeMap<String, String>,
    c: &ProjectContainer,
    st: &ContainerStatus,
    size: bool,
) -> (Summary, bool) {
    let engine = &target.engine;
    let host = engine.host();
    let spec = host.containers.spec(&c.id).ok();
    // Its record was read to list it, and now its spec: both whole when that parsed.
    let whole = spec.is_some();
    let image = target
        .loaded
        .as_ref()
        .and_then(|l| crate::engine::plan::image_reference(l, &c.service))
        .or_else(|| c.image_id.as_ref().and_then(|id| images.get(id).cloned()))
        .or_else(|| c.image_id.clone())
        .unwrap_or_default();
    let endpoint = host.networks.endpoint(&c.id).ok().flatten();
    let mut publishers: Vec<Publisher> = endpoint
        .as_ref()
        .map(|e| e.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| Publisher {
            url: p.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
            target_port: p.container_port,
            published_port: p.host_port,
            protocol: p.protocol.as_str().to_string(),
        })
        .collect();
    publishers.sort_by_key(|p| p.target_port);
    let networks = match &endpoint {
        Some(e) => match &e.mode {
            ModeRecord::Host => vec!["host".to_string()],
            ModeRecord::None => vec!["none".to_string()],
            _ => e.endpoints.iter().map(|ep| ep.network.clone()).collect(),
        },
        None => Vec::new(),
    };
    let (mut mounts, mut local_volumes) = (Vec::new(), 0);
    for m in spec.as_ref().map(|s| s.mounts.as_slice()).unwrap_or_default() {
        match (&m.volume, &m.kind) {
            (Some(v), _) => {
                local_volumes += 1;
                mounts.push(v.clone());
            }
            (None, MountKind::Bind { source, .. }) => mounts.push(source.display().to_string()),
            (None, MountKind::Tmpfs { .. }) => {}
        }
    }
    let running = matches!(st.state, State::Running);
    let ended = matches!(st.state, State::Exited | State::Dead);
    let row = Summary {
        id: c.id.clone(),
        name: c.name.clone(),
        image,
        command: spec.map(|s| s.process.args.join(" ")).unwrap_or_default(),
        project: c.labels.get(crate::labels::PROJECT).cloned().unwrap_or_else(|| target.name.clone()),
        service: c.service.clone(),
        created: parse_rfc3339(&c.created),
        state: st.state_word().to_string(),
        status: status_text(st),
        health: st
            .health
            .as_ref()
            .filter(|_| running)
            .map(|h| h.status.as_str().to_string())
            .unwrap_or_default(),
        exit_code: if ended { st.exit_code.unwrap_or(0) } else { 0 },
        publishers,
        labels: c.labels.clone(),
        mounts,
        local_volumes,
        networks,
        size_rw: size.then(|| engine.size_rw(&c.id)),
    };
    (row, whole)
}

/// `s` cut to `max` characters, the last one an ellipsis (docker's `Ellipsis`).
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` as Go's `strconv.Quote` writes it.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `t` as Go's `time.Time.String()` prints a time of whole seconds in the local zone:
/// `2024-05-02 12:21:53 +0400 +04`.
pub fn go_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let Ok(secs) = libc::time_t::try_from(secs) else { return String::new() };
    // SAFETY: localtime_r writes into our own zeroed `tm`; tzset reads TZ and /etc/localtime,
    // and zone names it returns live as long as the process.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tzset();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        tm
    };
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated name from the C library's zone table.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }.to_string_lossy().into_owned()
    };
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let (h, m) = (off.abs() / 3600, off.abs() % 3600 / 60);
    let zone = if zone.is_empty() { format!("{sign}{h:02}{m:02}") } else { zone };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{h:02}{m:02} {zone}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

unsafe extern "C" {
    fn tzset();
}

/// go-units' `HumanSizeWithPrecision(n, 3)`: `0B`, `2.05kB`, `21.5MB`.
fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    // %.4g, as go-units formats: three significant digits without trailing zeros.
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{v:.digits$}");
    let text =
        if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}{}", units[u])
}

/// docker's `DisplayablePorts`: runs of ports on one address grouped (`0.0.0.0:80-81->80-81/tcp`),
/// ports published on another number listed after them.
fn displayable_ports(publishers: &[Publisher]) -> String {
    let mut ports = publishers.to_vec();
    ports.sort_by(|a, b| {
        (a.target_port, &a.url, a.published_port).cmp(&(b.target_port, &b.url, b.published_port))
    });
    let host = |url: &str| if url.contains(':') { format!("[{url}]") } else { url.to_string() };
    let mut groups: Vec<(String, String, u16, u16)> = Vec::new();
    let mut mapped = Vec::new();
    for p in &ports {
        if p.published_port != p.target_port {
            mapped.push(format!("{}:{}->{}/{}", host(&p.url), p.published_port, p.target_port, p.protocol));
            continue;
        }
        match groups.iter_mut().rev().find(|g| g.0 == p.url && g.1 == p.protocol) {
            Some(g) if g.3.checked_add(1) == Some(p.target_port) => g.3 = p.target_port,
            _ => groups.push((p.url.clone(), p.protocol.clone(), p.target_port, p.target_port)),
        }
    }
    let mut out: Vec<String> = groups
        .into_iter()
        .map(|(url, proto, first, last)| {
            let range = if first == last { first.to_string() } else { format!("{first}-{last}") };
            format!("{}:{range}->{range}/{proto}", host(&url))
        })
        .collect();
    out.extend(mapped);
    out.join(", ")
}

/// Go's `encoding/json` escapes `<`, `>` and `&` in strings; docker compose's JSON has them
/// so (`0.0.0.0:8080-\u003e80/tcp`). They appear nowhere else in JSON text.
fn go_json(v: &Value) -> String {
    v.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

impl Summary {
    /// The fields docker compose's `ps` offers to `--format` (its `ContainerContext`, each
    /// method a key, in Go's sorted key order), truncated unless `no_trunc`; plus `Created`
    /// (seconds since the epoch), which docker compose printed before v2.21.
    pub fn fields(&self, no_trunc: bool) -> Value {
        let created = self.created.unwrap_or(UNIX_EPOCH);
        let created_secs = created.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let running_for = human_since(&crate::runtime::timefmt::rfc3339_nanos(created));
        let command = if no_trunc { self.command.clone() } else { ellipsis(&self.command, 20) };
        let mounts: Vec<String> =
            self.mounts.iter().map(|m| if no_trunc { m.clone() } else { ellipsis(m, 15) }).collect();
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let size = human_size(self.size_rw.unwrap_or(0));
        let id = if no_trunc { self.id.clone() } else { self.id.chars().take(12).collect() };
        json!({
            "Command": go_quote(&command),
            "Created": created_secs,
            "CreatedAt": go_time(created),
            "ExitCode": self.exit_code,
            "Health": self.health,
            "ID": id,
            "Image": self.image,
            "Labels": labels.join(","),
            "LocalVolumes": self.local_volumes.to_string(),
            "Mounts": mounts.join(","),
            "Name": self.name,
            "Names": self.name,
            "Networks": self.networks.join(","),
            "Ports": displayable_ports(&self.publishers),
            "Project": self.project,
            "Publishers": self.publishers,
            "RunningFor": format!("{running_for} ago"),
            "Service": self.service,
            "Size": size,
            "State": self.state,
            "Status": self.status,
        })
    }
}

/// docker compose's column titles for `table` templates.
const HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("Names", "NAMES"),
    ("Project", "PROJECT"),
    ("Service", "SERVICE"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Networks", "NETWORKS"),
];

/// The default table: docker compose's `table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}`.
const DEFAULT_TABLE: &str =
    "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}";

/// Which containers `--filter source=` keeps: those of services that use an image, or that
/// build one (docker-compose v1's filter; it needs the compose file).
fn source_keeps(target: &Target, service: &str, source: &str) -> CliResult<bool> {
    let Some(loaded) = &target.loaded else {
        return Err(CliError::msg(
            "--filter source needs the compose file (how a service gets its image is not recorded)",
        ));
    };
    let build = loaded.project.services.get(service).is_some_and(|s| s.build.is_some());
    Ok(match source {
        "build" => build,
        "image" => !build,
        other => return Err(CliError::msg(format!("--filter source={other}: expected image or build"))),
    })
}

/// Runs `berth ps`; without a compose file, `-p NAME` finds the project by its containers.
pub fn run(global: &GlobalOptions, args: &PsArgs) -> CliResult<()> {
    let mut statuses = args.status.clone();
    let mut source = None;
    if let Some(f) = &args.filter {
        match f.split_once('=') {
            Some(("status", v)) => statuses.push(v.to_string()),
            Some(("source", v)) => source = Some(v.to_string()),
            Some((k, _)) => return Err(CliError::msg(format!("unknown filter {k}"))),
            None => return Err(CliError::msg("arguments to --filter should be in form KEY=VAL")),
        }
    }
    let bad_format = |e: super::template::TemplateError| CliError::context("--format", e);
    let spec = match FormatSpec::parse(&args.format).map_err(bad_format)? {
        FormatSpec::Table => FormatSpec::parse(DEFAULT_TABLE).map_err(bad_format)?,
        other => other,
    };
    let target = project::open_or_name(global)?;
    target.check_services(&args.names)?;
    // With --orphans=false, only services the file declares.
    let declared =
        |s: &str| args.orphans || target.loaded.as_ref().is_none_or(|l| l.project.services.contains_key(s));
    // docker compose: `--status` implies `-a`; one-offs only with either.
    let all = args.all || !statuses.is_empty();
    let states = match (statuses.is_empty(), all) {
        (false, _) => States::Words(statuses),
        (true, true) => States::Any,
        (true, false) => States::Up,
    };
    let selection = Selection { services: args.names.clone(), oneoffs: all, states, ..Selection::default() };
    let images = target.engine.image_names();
    let size = match &spec {
        FormatSpec::Json => true,
        FormatSpec::Template { text, .. } => text.contains(".Size"),
        FormatSpec::Table => false,
    };
    let mut listed = Vec::new();
    for l in query::select(target.engine.host().containers, &target.name, &selection)? {
        if !declared(&l.container.service) {
            continue;
        }
        if let Some(src) = &source
            && !source_keeps(&target, &l.container.service, src)?
        {
            continue;
        }
        listed.push(l);
    }
    let mut whole = BTreeSet::new();
    let mut rows = Vec::new();
    for (row, read_whole) in
        crate::state::parallel_map(&listed, |l| summary(&target, &images, &l.container, &l.status, size))
    {
        if read_whole {
            whole.insert(row.id.clone());
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    warn_damaged(global, &target, &whole);
    if args.quiet {
        for r in &rows {
            outln!("{}", r.id)?;
        }
        return Ok(());
    }
    if args.services {
        let mut names: Vec<&str> = Vec::new();
        for r in &rows {
            if !names.contains(&r.service.as_str()) {
                names.push(&r.service);
            }
        }
        for n in names {
            outln!("{n}")?;
        }
        return Ok(());
    }
    print(&rows, spec, args.no_trunc)
}

/// One warning line on stderr for each container record of the project (or of no project
/// that can be told) that cannot be read, naming the file: such a container is not listed,
/// and the next `up` or `down` removes it (see `engine::observe::reconcile`). The containers
/// in `whole` were just read whole and are not read again.
fn warn_damaged(global: &GlobalOptions, target: &Target, whole: &BTreeSet<String>) {
    let Ok(damaged) = target.engine.host().containers.find_damaged_except(whole) else { return };
    let progress = project::progress(global);
    for d in damaged {
        let whose = d.labels.as_ref().and_then(|l| l.get(crate::labels::PROJECT));
        if whose.is_some_and(|p| *p != target.name) {
            continue;
        }
        let name = d.name.unwrap_or(d.id);
        progress.warn(&format!(
            "{}: damaged record ({}); container {name} is not listed (the next up or down removes it)",
            d.file.display(),
            d.reason
        ));
    }
}

/// Prints `rows` as `spec` says.
fn print(rows: &[Summary], spec: FormatSpec, no_trunc: bool) -> CliResult<()> {
    match spec {
        FormatSpec::Json => {
            for r in rows {
                outln!("{}", go_json(&r.fields(no_trunc)))?;
            }
            Ok(())
        }
        FormatSpec::Template { template, header, text } => {
            let mut lines = Vec::new();
            if header {
                lines.push(FormatSpec::header(&text, HEADERS));
            }
            for r in rows {
                let line =
                    template.render(&r.fields(no_trunc)).map_err(|e| CliError::context("--format", e))?;
                lines.push(line);
            }
            if header || lines.iter().any(|l| l.contains('\t')) {
                let cells: Vec<Vec<String>> =
                    lines.iter().map(|l| l.split('\t').map(str::to_string).collect()).collect();
                return out!("{}", super::image::list::table(&cells));
            }
            for l in lines {
                outln!("{l}")?;
            }
            Ok(())
        }
        FormatSpec::Table => {
            let spec = FormatSpec::parse(DEFAULT_TABLE).map_err(|e| CliError::context("--format", e))?;
            print(rows, spec, no_trunc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(url: &str, published: u16, target: u16) -> Publisher {
        Publisher { url: url.into(), target_port: target, published_port: published, protocol: "tcp".into() }
    }

    #[test]
    fn ports_are_grouped_as_docker_prints_them() {
        let p =
            [publisher("0.0.0.0", 81, 81), publisher("0.0.0.0", 80, 80), publisher("127.0.0.1", 8080, 90)];
        assert_eq!(displayable_ports(&p), "0.0.0.0:80-81->80-81/tcp, 127.0.0.1:8080->90/tcp");
        assert_eq!(displayable_ports(&[publisher("::", 5000, 5000)]), "[::]:5000->5000/tcp");
        assert_eq!(displayable_ports(&[]), "");
    }

    #[test]
    fn text_is_quoted_cut_and_sized_as_go_does() {
        assert_eq!(go_quote("sh -c \"x\"\n"), r#""sh -c \"x\"\n""#);
        assert_eq!(ellipsis("sleep 1000", 20), "sleep 1000");
        assert_eq!(ellipsis("/docker-entrypoint.sh nginx", 20), "/docker-entrypoint.…");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(2048), "2.05kB");
        assert_eq!(human_size(21_500_000), "21.5MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(go_json(&json!({"Ports": "a->b & <c>"})), r#"{"Ports":"a-\u003eb \u0026 \u003cc\u003e"}"#);
    }

    #[test]
    fn json_fields_have_docker_compose_names_and_types() {
        let s = Summary {
            id: "a".repeat(64),
            name: "p-web-1".into(),
            command: "sh -c 'sleep 1000; echo done'".into(),
            created: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            labels: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
            mounts: vec!["/a/very/long/host/path".into(), "p_data".into()],
            local_volumes: 1,
            publishers: vec![publisher("0.0.0.0", 8080, 80)],
            ..Summary::default()
        };
        let v = s.fields(false);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "Go prints map keys sorted");
        assert_eq!(v["ID"], "a".repeat(12));
        assert_eq!(s.fields(true)["ID"], "a".repeat(64));
        assert_eq!(v["Command"], "\"sh -c 'sleep 1000; …\"");
        assert_eq!(v["Labels"], "a=1,b=2");
        assert_eq!(v["LocalVolumes"], "1");
        assert_eq!(v["Mounts"], "/a/very/long/h…,p_data");
        assert_eq!(v["Names"], "p-web-1");
        assert_eq!(v["ExitCode"], 0);
        assert_eq!(v["Created"], 1_700_000_000);
        assert_eq!(v["Ports"], "0.0.0.0:8080->80/tcp");
        assert_eq!(v["Publishers"][0]["PublishedPort"], 8080);
        assert_eq!(v["Size"], "0B");
        assert!(v["RunningFor"].as_str().unwrap().ends_with(" ago"));
        // The machine's zone (UTC here unless TZ says otherwise): date, time, offset, name.
        let at = v["CreatedAt"].as_str().unwrap();
        let parts: Vec<&str> = at.split(' ').collect();
        assert_eq!(parts.len(), 4, "{at}");
        assert!(parts[2].len() == 5 && (parts[2].starts_with('+') || parts[2].starts_with('-')), "{at}");
    }
}
