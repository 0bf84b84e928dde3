//! What a conversion could not carry over, or carried over differently: printed on standard
//! error by `berth convert`, and an error under `--strict`.

use std::fmt;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Converted, but it behaves differently on Kubernetes (or needs a step first).
    Note,
    /// Not converted at all: the key has no effect in the manifests.
    Dropped,
}

/// One finding: where (a service, volume...), which compose key, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `service "web"`, `volume "data"`, `project`.
    pub scope: String,
    /// The compose key (`ulimits`, `deploy.placement`).
    pub key: String,
    /// What happened.
    pub level: Level,
    /// Why, in a sentence.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.level {
            Level::Note => "note",
            Level::Dropped => "not converted",
        };
        write!(f, "{what}: {}: {}: {}", self.scope, self.key, self.reason)
    }
}

/// Every finding of one conversion, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    findings: Vec<Finding>,
}

impl Report {
    /// Records a key that was not converted.
    pub fn dropped(&mut self, scope: &str, key: &str, reason: impl Into<String>) {
        self.push(scope, key, Level::Dropped, reason.into());
    }

    /// Records a key converted with a difference worth knowing.
    pub fn note(&mut self, scope: &str, key: &str, reason: impl Into<String>) {
        self.push(scope, key, Level::Note, reason.into());
    }

    fn push(&mut self, scope: &str, key: &str, level: Level, reason: String) {
        let f = Finding { scope: scope.to_string(), key: key.to_string(), level, reason };
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }

    /// The findings, sorted by scope and key (each scope's findings together).
    pub fn findings(&self) -> Vec<&Finding> {
        let mut all: Vec<&Finding> = self.findings.iter().collect();
        all.sort();
        all
    }

    /// How many keys were not converted.
    pub fn dropped_count(&self) -> usize {
        self.findings.iter().filter(|f| f.level == Level::Dropped).count()
    }

    /// Whether a finding about `key` in `scope` exists (tests).
    #[cfg(test)]
    pub fn has(&self, scope: &str, key: &str, level: Level) -> bool {
        self.findings.iter().any(|f| f.scope == scope && f.key == key && f.level == level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_sorted_deduplicated_and_counted() {
        let mut r = Report::default();
        r.dropped("service \"b\"", "ulimits", "no equivalent");
        r.note("service \"a\"", "build", "push first");
        r.dropped("service \"b\"", "ulimits", "no equivalent");
        let all = r.findings();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].scope, "service \"a\"");
        assert_eq!(r.dropped_count(), 1);
        assert_eq!(all[1].to_string(), "not converted: service \"b\": ulimits: no equivalent");
    }
}
