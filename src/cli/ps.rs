//! `berth ps`: the project's containers, as a table or as docker compose's JSON.

use clap::Args;
use serde::Serialize;

use super::output::outln;
use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::observe::{ProjectContainer, project_containers, status_of};
use crate::netns::record::read_endpoint;
use crate::runtime::status::{ContainerStatus, HealthState, State};

/// `berth ps` flags.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, stopped ones too
    #[arg(short = 'a', long)]
    all: bool,
    /// Only ids
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Only service names
    #[arg(long)]
    services: bool,
    /// Output format: table or json
    #[arg(long, default_value = "table")]
    format: String,
    /// Only containers in this state (running, exited, ...; repeatable)
    #[arg(long)]
    status: Vec<String>,
    /// Services (default: all)
    #[arg(value_name = "SERVICE")]
    names: Vec<String>,
}

/// One published port, as docker compose's JSON shows it.
#[derive(Debug, Serialize)]
struct Publisher {
    #[serde(rename = "URL")]
    url: String,
    #[serde(rename = "TargetPort")]
    target_port: u16,
    #[serde(rename = "PublishedPort")]
    published_port: u16,
    #[serde(rename = "Protocol")]
    protocol: String,
}

/// One container, with docker compose's field names.
#[derive(Debug, Serialize)]
struct Row {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Image")]
    image: String,
    #[serde(rename = "Command")]
    command: String,
    #[serde(rename = "Project")]
    project: String,
    #[serde(rename = "Service")]
    service: String,
    #[serde(rename = "CreatedAt")]
    created: String,
    #[serde(rename = "State")]
    state: String,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "Health")]
    health: String,
    #[serde(rename = "ExitCode")]
    exit_code: i32,
    #[serde(rename = "Publishers")]
    publishers: Vec<Publisher>,
}

fn ago(time: Option<&str>) -> String {
    time.map(crate::runtime::timefmt::human_since).unwrap_or_default()
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
                _ => "",
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

fn row(ctx: &project::ProjectCtx, c: &ProjectContainer, st: &ContainerStatus) -> Row {
    let engine = &ctx.engine;
    let spec = engine.runtime.spec(&c.id).ok();
    let image = ctx
        .loaded
        .project
        .services
        .get(&c.service)
        .and_then(|s| s.image.clone())
        .or_else(|| c.image_id.clone())
        .unwrap_or_default();
    let command = spec.map(|s| s.process.args.join(" ")).unwrap_or_default();
    let publishers = read_endpoint(engine.dirs(), &c.id)
        .ok()
        .flatten()
        .map(|e| e.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| Publisher {
            url: p.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
            target_port: p.container_port,
            published_port: p.host_port,
            protocol: p.protocol.as_str().to_string(),
        })
        .collect();
    Row {
        id: c.id.clone(),
        name: c.name.clone(),
        image,
        command,
        project: ctx.loaded.project.name.clone(),
        service: c.service.clone(),
        created: c.created.clone(),
        state: st.state_word().to_string(),
        status: status_text(st),
        health: st.health.as_ref().map(|h| h.status.as_str().to_string()).unwrap_or_default(),
        exit_code: st.exit_code.unwrap_or(0),
        publishers,
    }
}

fn ports_text(r: &Row) -> String {
    r.publishers
        .iter()
        .map(|p| format!("{}:{}->{}/{}", p.url, p.published_port, p.target_port, p.protocol))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `berth ps`.
pub fn run(global: &GlobalOptions, args: &PsArgs) -> CliResult<()> {
    if args.format != "table" && args.format != "json" {
        return Err(CliError::msg(format!("--format {:?}: expected table or json", args.format)));
    }
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.names)?;
    let mut rows = Vec::new();
    for c in project_containers(&ctx.engine.runtime, &ctx.loaded.project.name)? {
        if c.oneoff || (!args.names.is_empty() && !args.names.contains(&c.service)) {
            continue;
        }
        let st = status_of(&ctx.engine.runtime, &c.id);
        let running = matches!(st.state, State::Running | State::Restarting);
        if !args.status.is_empty() {
            if !args.status.iter().any(|s| s == st.state_word()) {
                continue;
            }
        } else if !args.all && !running {
            continue;
        }
        rows.push(row(&ctx, &c, &st));
    }
    if args.services {
        let mut names: Vec<&str> = rows.iter().map(|r| r.service.as_str()).collect();
        names.dedup();
        for n in names {
            outln!("{n}")?;
        }
        return Ok(());
    }
    if args.quiet {
        for r in &rows {
            outln!("{}", r.id)?;
        }
        return Ok(());
    }
    if args.format == "json" {
        for r in &rows {
            outln!("{}", serde_json::to_string(r).map_err(|e| CliError::msg(e.to_string()))?)?;
        }
        return Ok(());
    }
    let header = ["NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS"];
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let mut command = r.command.clone();
            if command.chars().count() > 20 {
                command = format!("{}…", command.chars().take(19).collect::<String>());
            }
            [
                r.name.clone(),
                r.image.clone(),
                format!("\"{command}\""),
                r.service.clone(),
                format!("{} ago", ago(Some(&r.created))),
                r.status.clone(),
                ports_text(r),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &table {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> =
            cells.iter().zip(widths.iter()).map(|(c, w)| format!("{c:<width$}", width = *w)).collect();
        outln!("{}", parts.join("   ").trim_end())
    };
    line(header.to_vec())?;
    for r in &table {
        line(r.iter().map(String::as_str).collect())?;
    }
    Ok(())
}
