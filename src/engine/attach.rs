//! How an attached `up` ends: which container exits stop the project
//! (`--abort-on-container-exit`, `--abort-on-container-failure`, `--exit-code-from`) and
//! what exit code `up` returns. The CLI follows logs and signals; the decisions are here.

use std::collections::BTreeSet;

use crate::runtime::status::{ContainerStatus, State};

use super::observe::ProjectContainer;

/// What ends an attached `up`, as asked on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    /// Stop the project when any container exits.
    pub abort_on_container_exit: bool,
    /// Stop the project when any container exits with a failure.
    pub abort_on_container_failure: bool,
    /// Return this service's container's exit code (implies `abort_on_container_exit`).
    pub exit_code_from: Option<String>,
}

impl ExitPolicy {
    /// Whether a container exiting with `code` stops the project.
    pub fn aborts_on(&self, code: i32) -> bool {
        self.abort_on_container_exit
            || self.exit_code_from.is_some()
            || (self.abort_on_container_failure && code != 0)
    }
}

/// Why an attached `up` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every container exited by itself.
    AllExited,
    /// A container exited (or failed) under an abort policy: its exit code.
    Aborted(i32),
    /// Ctrl-C.
    Interrupted,
}

/// What one look at the watched containers found.
#[derive(Debug, Default)]
pub struct Look {
    /// Containers that exited since the last look, with their exit codes, to report.
    pub exited: Vec<(ProjectContainer, i32)>,
    /// How many watched containers still run.
    pub running: usize,
    /// The project must now be stopped (the first time an exit triggers the policy).
    pub abort: bool,
}

/// Watches the attached containers for exits and decides, by the policy, when the project
/// stops and with which exit code `up` ends.
#[derive(Debug)]
pub struct ExitWatch {
    policy: ExitPolicy,
    watched: Vec<ProjectContainer>,
    reported: BTreeSet<String>,
    ending: Option<Ending>,
}

impl ExitWatch {
    /// Watches `watched` under `policy`.
    pub fn new(policy: ExitPolicy, watched: Vec<ProjectContainer>) -> ExitWatch {
        ExitWatch { policy, watched, reported: BTreeSet::new(), ending: None }
    }

    /// Looks at every watched container's status (`status` of an id).
    pub fn look(&mut self, status: impl Fn(&str) -> ContainerStatus) -> Look {
        let mut look = Look::default();
        for c in &self.watched {
            let st = status(&c.id);
            if !matches!(st.state, State::Exited | State::Dead) {
                look.running += 1;
                continue;
            }
            if !self.reported.insert(c.id.clone()) {
                continue;
            }
            let code = st.exit_code.unwrap_or(-1);
            look.exited.push((c.clone(), code));
            if self.policy.aborts_on(code) && self.ending.is_none() {
                self.ending = Some(Ending::Aborted(code));
                look.abort = true;
            }
        }
        look
    }

    /// Ctrl-C was pressed (the first reason to stop wins).
    pub fn interrupted(&mut self) {
        self.ending.get_or_insert(Ending::Interrupted);
    }

    /// Why the watch ended.
    pub fn ending(&self) -> Ending {
        self.ending.unwrap_or(Ending::AllExited)
    }

    /// The exit code `up` returns: with `exit_code_from`, that service's container's (the
    /// first of `all` when it is not watched; 0 when it has none); else 0 when every
    /// container exited by itself, the aborting container's code, or 130 after Ctrl-C.
    pub fn exit_code(&self, all: &[ProjectContainer], status: impl Fn(&str) -> ContainerStatus) -> i32 {
        if let Some(svc) = &self.policy.exit_code_from {
            return self
                .watched
                .iter()
                .chain(all)
                .find(|c| &c.service == svc)
                .map(|c| status(&c.id).exit_code.unwrap_or(0))
                .unwrap_or(0);
        }
        match self.ending() {
            Ending::AllExited => 0,
            Ending::Aborted(code) => code,
            Ending::Interrupted => 130,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::fake::{container as c, exited, running};

    fn statuses(list: &[(&str, ContainerStatus)]) -> impl Fn(&str) -> ContainerStatus {
        let map: BTreeMap<String, ContainerStatus> =
            list.iter().map(|(s, st)| (format!("id-{s}"), st.clone())).collect();
        move |id: &str| map.get(id).cloned().unwrap_or_else(running)
    }

    #[test]
    fn without_a_policy_up_waits_for_every_container_and_returns_0() {
        let mut w = ExitWatch::new(ExitPolicy::default(), vec![c("a"), c("b")]);
        let look = w.look(statuses(&[("a", exited(3))]));
        assert_eq!((look.exited.len(), look.running, look.abort), (1, 1, false));
        // Reported once.
        let look = w.look(statuses(&[("a", exited(3)), ("b", exited(0))]));
        assert_eq!(look.exited.iter().map(|e| e.0.service.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(look.running, 0);
        assert_eq!(w.exit_code(&[], statuses(&[])), 0);
    }

    #[test]
    fn abort_on_exit_stops_at_the_first_exit_with_its_code() {
        let policy = ExitPolicy { abort_on_container_exit: true, ..ExitPolicy::default() };
        let mut w = ExitWatch::new(policy, vec![c("a"), c("b")]);
        assert!(!w.look(statuses(&[])).abort);
        assert!(w.look(statuses(&[("b", exited(4))])).abort);
        assert!(!w.look(statuses(&[("a", exited(0)), ("b", exited(4))])).abort, "only once");
        assert_eq!(w.ending(), Ending::Aborted(4));
        assert_eq!(w.exit_code(&[], statuses(&[])), 4);
    }

    #[test]
    fn abort_on_failure_ignores_clean_exits() {
        let policy = ExitPolicy { abort_on_container_failure: true, ..ExitPolicy::default() };
        let mut w = ExitWatch::new(policy, vec![c("a"), c("b")]);
        assert!(!w.look(statuses(&[("a", exited(0))])).abort);
        assert!(w.look(statuses(&[("a", exited(0)), ("b", exited(2))])).abort);
        assert_eq!(w.exit_code(&[], statuses(&[])), 2);
    }

    #[test]
    fn exit_code_from_returns_that_services_code_whoever_aborted() {
        let policy = ExitPolicy { exit_code_from: Some("job".into()), ..ExitPolicy::default() };
        let mut w = ExitWatch::new(policy, vec![c("web")]);
        assert!(w.look(statuses(&[("web", exited(1))])).abort);
        let all = [c("web"), c("job")];
        assert_eq!(w.exit_code(&all, statuses(&[("web", exited(1)), ("job", exited(7))])), 7);
        // Interrupted: Ctrl-C is 130 unless exit_code_from says otherwise.
        let mut w = ExitWatch::new(ExitPolicy::default(), vec![c("web")]);
        w.interrupted();
        assert_eq!(w.exit_code(&[], statuses(&[])), 130);
    }
}
