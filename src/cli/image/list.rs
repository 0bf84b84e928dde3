//! `berth image ls`: docker's table (or JSON lines, or a Go template) of the store's images,
//! newest first, with docker's filters.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::super::template::FormatSpec;
use super::super::{CliError, CliResult};
use super::{created_since, human_size, short_id};
use crate::image::build::context::path_match;
use crate::image::{ImageStore, Reference};
use crate::runtime::timefmt::parse_rfc3339;

/// One row: a name (or `<none>`) of an image.
struct Row {
    repository: String,
    tag: String,
    id: String,
    digest: Option<String>,
    created: String,
    size: u64,
    labels: serde_json::Map<String, Value>,
}

/// docker's `image ls` filters, each key with the values given (a key given twice: for
/// `reference` either may match, for `label`, `before` and `since` all must).
#[derive(Default)]
struct Filters {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    before: Vec<SystemTime>,
    since: Vec<SystemTime>,
}

fn created_of(store: &ImageStore, image: &str, key: &str) -> CliResult<SystemTime> {
    let v =
        store.inspect(image).map_err(|e| CliError::context(format!("invalid filter '{key}={image}'"), e))?;
    v["Created"].as_str().and_then(parse_rfc3339).ok_or_else(|| {
        CliError::msg(format!("invalid filter '{key}={image}': the image has no creation time"))
    })
}

impl Filters {
    fn parse(store: &ImageStore, given: &[String]) -> CliResult<Filters> {
        let mut f = Filters::default();
        for g in given {
            let bad = || CliError::msg(format!("invalid filter '{g}'"));
            let (key, value) = g.split_once('=').ok_or_else(bad)?;
            match key.trim().to_ascii_lowercase().as_str() {
                "dangling" => {
                    let v = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(CliError::msg(format!(
                                "invalid filter '{g}': dangling takes true or false"
                            )));
                        }
                    };
                    if f.dangling.is_some_and(|d| d != v) {
                        return Err(CliError::msg("invalid filter: dangling given as both true and false"));
                    }
                    f.dangling = Some(v);
                }
                "reference" => f.references.push(value.to_string()),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                "before" => f.before.push(created_of(store, value, "before")?),
                "since" => f.since.push(created_of(store, value, "since")?),
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    fn keep(&self, row: &Row) -> bool {
        let dangling = row.repository == "<none>";
        if self.dangling.is_some_and(|d| d != dangling) {
            return false;
        }
        if !self.references.is_empty() {
            // docker matches the pattern against `name:tag` and `name` (familiar forms).
            if dangling {
                return false;
            }
            let with_tag = format!("{}:{}", row.repository, row.tag);
            if !self.references.iter().any(|p| path_match(p, &with_tag) || path_match(p, &row.repository)) {
                return false;
            }
        }
        for (k, v) in &self.labels {
            match (row.labels.get(k), v) {
                (None, _) => return false,
                (Some(have), Some(want)) if have.as_str() != Some(want.as_str()) => return false,
                _ => {}
            }
        }
        let created = parse_rfc3339(&row.created);
        let before_ok = self.before.iter().all(|b| created.is_some_and(|c| c < *b));
        let since_ok = self.since.iter().all(|s| created.is_some_and(|c| c > *s));
        before_ok && since_ok
    }
}

/// docker's `image prune` filters: `until` (created before; docker takes one), `label` and
/// `label!` (each must hold).
#[derive(Debug, Default)]
pub(super) struct PruneFilters {
    until: Option<SystemTime>,
    labels: Vec<(String, Option<String>, bool)>,
}

impl PruneFilters {
    /// Parses `--filter` values; relative times count back from `now`.
    pub(super) fn parse(given: &[String], now: SystemTime) -> CliResult<PruneFilters> {
        let mut f = PruneFilters::default();
        for g in given {
            let bad = |why: &str| CliError::msg(format!("invalid filter '{g}'{why}"));
            let (key, value) = g.split_once('=').ok_or_else(|| bad(""))?;
            match key.trim().to_ascii_lowercase().as_str() {
                "until" => {
                    if f.until.is_some() {
                        return Err(bad(": until may be given once"));
                    }
                    let t = crate::cli::timestamp::parse(value, now)
                        .ok_or_else(|| bad(": expected a timestamp or a duration such as 24h"))?;
                    f.until = Some(t);
                }
                k @ ("label" | "label!") => {
                    let (lk, lv) = match value.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (value.to_string(), None),
                    };
                    if lk.is_empty() {
                        return Err(bad(": a label filter needs a key"));
                    }
                    f.labels.push((lk, lv, k == "label"));
                }
                _ => return Err(bad(": image prune takes until, label and label!")),
            }
        }
        Ok(f)
    }

    /// Whether an image created at `created` with `labels` matches.
    fn matches(&self, created: Option<SystemTime>, labels: &serde_json::Map<String, Value>) -> bool {
        if let Some(until) = self.until
            && created.is_none_or(|c| c >= until)
        {
            return false;
        }
        self.labels.iter().all(|(k, v, present)| {
            let has = match (labels.get(k), v) {
                (None, _) => false,
                (Some(have), Some(want)) => have.as_str() == Some(want.as_str()),
                (Some(_), None) => true,
            };
            has == *present
        })
    }

    /// The ids of the store's images that match.
    pub(super) fn select(&self, store: &ImageStore) -> CliResult<std::collections::BTreeSet<String>> {
        Ok(rows(store)?
            .into_iter()
            .filter(|r| self.matches(parse_rfc3339(&r.created), &r.labels))
            .map(|r| r.id)
            .collect())
    }
}

/// `2024-01-02 03:04:05 +0000 UTC`, as docker prints `CreatedAt`.
fn docker_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..19)) {
        (Some(d), Some(t)) if rfc3339.ends_with('Z') => format!("{d} {t} +0000 UTC"),
        _ => rfc3339.replace('T', " "),
    }
}

fn rows(store: &ImageStore) -> CliResult<Vec<Row>> {
    let err = |e: crate::image::ImageError| CliError::from(e);
    let mut out = Vec::new();
    for s in store.list().map_err(err)? {
        let v = store.inspect(&s.id).map_err(err)?;
        let labels = v["Config"]["Labels"].as_object().cloned().unwrap_or_default();
        let named = s.repository != "<none>";
        // A registry digest when the image came from (or went to) its repository.
        let digest = if named {
            let name = format!("{}:{}", s.repository, s.tag);
            let full = Reference::parse(&name).map(|r| r.repository).unwrap_or_default();
            let known = crate::image::registry::known_repositories(store, &s.id);
            if known.contains(&full) { store.manifest_of(&name).ok().map(|(d, _, _)| d) } else { None }
        } else {
            None
        };
        out.push(Row {
            repository: s.repository,
            tag: s.tag,
            id: s.id,
            digest,
            created: s.created,
            size: s.size,
            labels,
        });
    }
    // Newest first, as docker lists them.
    out.sort_by_key(|r| std::cmp::Reverse(parse_rfc3339(&r.created)));
    Ok(out)
}

/// Columns padded as docker's tabwriter does (at least 10 wide, 3 spaces apart).
pub(in crate::cli) fn table(lines: &[Vec<String>]) -> String {
    let cols = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for l in lines {
        for (i, c) in l.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == l.len() {
                line.push_str(c);
            } else {
                let w = (widths[i] + 3).max(10);
                line.push_str(&format!("{c:<w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The text `image ls` prints.
pub(super) fn render(
    store: &ImageStore,
    filters: &[String],
    reference: Option<&str>,
    quiet: bool,
    digests: bool,
    no_trunc: bool,
    format: &str,
) -> CliResult<String> {
    let spec = FormatSpec::parse(format).map_err(|e| CliError::context("image ls --format", e))?;
    let mut given = filters.to_vec();
    if let Some(r) = reference {
        given.push(format!("reference={r}"));
    }
    let f = Filters::parse(store, &given)?;
    let rows: Vec<Row> = rows(store)?.into_iter().filter(|r| f.keep(r)).collect();
    let id_of = |r: &Row| if no_trunc { r.id.clone() } else { short_id(&r.id).to_string() };
    if quiet {
        let mut seen = Vec::new();
        let mut out = String::new();
        for r in &rows {
            let id = id_of(r);
            if !seen.contains(&id) {
                out.push_str(&id);
                out.push('\n');
                seen.push(id);
            }
        }
        return Ok(out);
    }
    let object = |r: &Row| {
        json!({
            "Containers": "N/A",
            "CreatedAt": docker_time(&r.created),
            "CreatedSince": created_since(&r.created),
            "Digest": r.digest.clone().unwrap_or_else(|| "<none>".into()),
            "ID": id_of(r),
            "Repository": r.repository,
            "SharedSize": "N/A",
            "Size": human_size(r.size),
            "Tag": r.tag,
            "UniqueSize": "N/A",
            "VirtualSize": human_size(r.size),
        })
    };
    match spec {
        FormatSpec::Json => {
            let mut out = String::new();
            for r in &rows {
                out.push_str(&object(r).to_string());
                out.push('\n');
            }
            Ok(out)
        }
        FormatSpec::Template { template, header, text } => {
            let mut lines = Vec::new();
            if header {
                let names = [
                    ("Repository", "REPOSITORY"),
                    ("Tag", "TAG"),
                    ("Digest", "DIGEST"),
                    ("ID", "IMAGE ID"),
                    ("CreatedSince", "CREATED"),
                    ("CreatedAt", "CREATED AT"),
                    ("Size", "SIZE"),
                ];
                lines.push(FormatSpec::header(&text, &names));
            }
            for r in &rows {
                lines.push(
                    template.render(&object(r)).map_err(|e| CliError::context("image ls --format", e))?,
                );
            }
            // A template with tabs is a table: its cells aligned as docker's tabwriter does.
            if lines.iter().any(|l| l.contains('\t')) {
                let cells: Vec<Vec<String>> =
                    lines.iter().map(|l| l.split('\t').map(str::to_string).collect()).collect();
                return Ok(table(&cells));
            }
            Ok(lines.iter().map(|l| format!("{l}\n")).collect())
        }
        FormatSpec::Table => {
            let mut head = vec!["REPOSITORY".to_string(), "TAG".into()];
            if digests {
                head.push("DIGEST".into());
            }
            head.extend(["IMAGE ID".to_string(), "CREATED".into(), "SIZE".into()]);
            let mut lines = vec![head];
            for r in &rows {
                let mut l = vec![r.repository.clone(), r.tag.clone()];
                if digests {
                    l.push(r.digest.clone().unwrap_or_else(|| "<none>".into()));
                }
                l.extend([id_of(r), created_since(&r.created), human_size(r.size)]);
                lines.push(l);
            }
            Ok(table(&lines))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_like_docker() {
        let t = table(&[
            vec!["REPOSITORY".into(), "TAG".into(), "SIZE".into()],
            vec!["busybox".into(), "latest".into(), "4.26MB".into()],
        ]);
        assert_eq!(t, "REPOSITORY   TAG       SIZE\nbusybox      latest    4.26MB\n");
        assert_eq!(docker_time("2024-01-02T03:04:05.123Z"), "2024-01-02 03:04:05 +0000 UTC");
    }

    #[test]
    fn prune_filters_match_as_docker() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let f = |g: &[&str]| PruneFilters::parse(&g.iter().map(|s| s.to_string()).collect::<Vec<_>>(), now);
        let labels: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"team":"db","keep":""}"#).unwrap();
        let old = Some(now - Duration::from_secs(7200));
        let new = Some(now - Duration::from_secs(60));
        let until = f(&["until=1h"]).unwrap();
        assert!(until.matches(old, &labels) && !until.matches(new, &labels) && !until.matches(None, &labels));
        assert!(f(&["label=team"]).unwrap().matches(new, &labels));
        assert!(f(&["label=team=db"]).unwrap().matches(new, &labels));
        assert!(!f(&["label=team=web"]).unwrap().matches(new, &labels));
        assert!(!f(&["label!=keep"]).unwrap().matches(new, &labels));
        assert!(f(&["label!=team=web", "until=2023-11-14T21:00:00Z"]).unwrap().matches(old, &labels));
        for bad in ["until=soon", "until", "dangling=true", "label=", "until=1h"] {
            let given: &[&str] = if bad == "until=1h" { &["until=1h", "until=2h"] } else { &[bad] };
            assert!(f(given).is_err(), "{given:?}");
        }
    }
}
