//! What the shim decides about its container, as a pure reducer: given the state, an event
//! (the process started or exited, a probe finished, a user asked for a stop, time passed) and
//! the time, it updates the state and says what to do (start the process again, send a signal,
//! run a probe, write the status). No system call happens here, so docker's rules (restart
//! back-off, `on-failure:N`, stops by a user, healthcheck start periods and retries, stop
//! deadlines) are tested with a clock the tests move; the shim's poll loop only performs the
//! actions.

use std::time::{Duration, Instant};

use super::spec::{HealthcheckSpec, RestartPolicy};
use super::status::{ContainerStatus, Health, HealthResult, HealthState, State};

/// docker waits 100 ms before the first restart and twice as long before each next one...
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// ...up to a minute.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run at least this long counts as a good one: the next back-off starts over.
pub(crate) const RESET_BACKOFF_AFTER: Duration = Duration::from_secs(10);
/// Grace time of a stop when neither the request nor the spec gives one (docker's 10 s).
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Health results kept in the status, as docker keeps them.
const HEALTH_LOG_LEN: usize = 5;
/// What docker records as the output of a probe that ran out of time.
const PROBE_TIMEOUT_OUTPUT: &str = "Health check exceeded timeout";

/// The container's rules, from its spec.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// What happens when the process exits.
    pub restart: RestartPolicy,
    /// Its healthcheck.
    pub healthcheck: Option<HealthcheckSpec>,
    /// The container's own stop signal (the service's `stop_signal`, else the image's
    /// `StopSignal`), a number; a stop sends SIGTERM without one.
    pub stop_signal: Option<i32>,
    /// How long a stop waits before SIGKILL, when the request gives no time.
    pub stop_grace: Option<Duration>,
}

/// Something that happened to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Its process runs (the first start or a restart).
    Started {
        /// The process id.
        pid: i32,
        /// Wall-clock time, RFC 3339.
        at: String,
    },
    /// A restart failed before the process ran.
    StartFailed {
        /// Why.
        error: String,
    },
    /// Its process exited with this status (128+n for a signal).
    Exited {
        /// The exit status.
        code: i32,
        /// The kernel's OOM killer ended it.
        oom: bool,
        /// Wall-clock time, RFC 3339.
        at: String,
    },
    /// A user asked for a stop (`stop`, or a SIGTERM to the shim).
    StopRequested {
        /// Grace time before SIGKILL; the spec's, or docker's 10 s, when absent.
        grace: Option<Duration>,
        /// The signal; the spec's `stop_signal`, when absent.
        signal: Option<i32>,
    },
    /// A user killed it (`kill`) with this signal: the restart policy no longer applies when
    /// [`kill_ends_restarts`] says so.
    Killed {
        /// The signal's number.
        signal: i32,
    },
    /// A probe could not be started (fork failed).
    ProbeNotStarted,
    /// A probe ended with this exit status.
    ProbeFinished {
        /// Its exit status.
        code: i32,
        /// What it printed.
        output: String,
        /// When it started and ended (RFC 3339).
        start: String,
        /// When it ended.
        end: String,
    },
    /// Time passed: deadlines may have come.
    Tick,
}

/// What the shim must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start the container's process again.
    Restart,
    /// Send a signal (its number) to the container's first process.
    Signal(i32),
    /// SIGKILL the container's first process and everything else in its cgroup.
    KillAll,
    /// Run the healthcheck command in the container.
    StartProbe,
    /// SIGKILL the probe, which is then reaped and reported as timed out.
    KillProbe,
    /// SIGKILL the probe and reap it now; its result no longer counts.
    DropProbe,
    /// Write the status.
    Save,
}

/// A probe in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProbeClock {
    deadline: Instant,
    timed_out: bool,
}

/// The container's state as the shim tracks it: the recorded status and the timers.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    rules: Rules,
    /// What `status.json` says.
    pub status: ContainerStatus,
    running_since: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
    stop_deadline: Option<Instant>,
    health_next: Option<Instant>,
    start_period_end: Option<Instant>,
    probe: Option<ProbeClock>,
}

/// Whether a kill with `signal` ends the restart policy of a container whose own stop signal
/// is `stop_signal`, as docker's `killWithSignal` decides (it marks the container
/// `ExitOnNext`): always for SIGKILL or a container without a stop signal of its own;
/// otherwise only when the signal is that stop signal. Any other signal is only a message to
/// the process (SIGHUP to reload, SIGUSR1 to rotate logs, ...): should it end the process,
/// the restart policy starts it again.
pub(crate) fn kill_ends_restarts(stop_signal: Option<i32>, signal: i32) -> bool {
    signal == libc::SIGKILL || stop_signal.is_none_or(|own| own == signal)
}

impl Lifecycle {
    /// A container that has not started yet.
    pub fn new(rules: Rules, status: ContainerStatus) -> Lifecycle {
        Lifecycle {
            rules,
            status,
            running_since: None,
            restart_at: None,
            backoff: FIRST_BACKOFF,
            stop_deadline: None,
            health_next: None,
            start_period_end: None,
            probe: None,
        }
    }

    /// The earliest time at which a `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let probe = self.probe.filter(|p| !p.timed_out).map(|p| p.deadline);
        let health = if self.probe.is_none() { self.health_next } else { None };
        [self.restart_at, self.stop_deadline, health, probe].into_iter().flatten().min()
    }

    /// Nothing runs and nothing will: the shim records the end and exits.
    pub fn is_over(&self) -> bool {
        self.running_since.is_none() && self.restart_at.is_none() && self.probe.is_none()
    }

    /// A restart is scheduled.
    pub fn restart_pending(&self) -> bool {
        self.restart_at.is_some()
    }

    /// Applies `event` at time `now`; returns what the shim must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Started { pid, at } => self.started(pid, at, now),
            Event::StartFailed { error } => {
                self.status.error = Some(error);
                self.status.state = State::Exited;
                vec![Action::Save]
            }
            Event::Exited { code, oom, at } => self.exited(code, oom, at, now),
            Event::StopRequested { grace, signal } => self.stop(grace, signal, now),
            Event::Killed { signal } => {
                if !kill_ends_restarts(self.rules.stop_signal, signal) {
                    return Vec::new();
                }
                self.status.stopped_by_user = true;
                // A restart waiting for its back-off is called off.
                if self.restart_at.take().is_some() {
                    self.status.state = State::Exited;
                    return vec![Action::Save];
                }
                Vec::new()
            }
            Event::ProbeNotStarted => {
                self.probe = None;
                self.health_next = Some(now + self.probe_interval(now));
                Vec::new()
            }
            Event::ProbeFinished { code, output, start, end } => {
                self.probe_finished(code, output, start, end, now)
            }
            Event::Tick => self.tick(now),
        }
    }

    fn started(&mut self, pid: i32, at: String, now: Instant) -> Vec<Action> {
        self.running_since = Some(now);
        self.status.state = State::Running;
        self.status.pid = pid;
        self.status.started_at = Some(at);
        self.status.error = None;
        if let Some(h) = &self.rules.healthcheck {
            self.start_period_end = Some(now + Duration::from_millis(h.start_period_ms));
            // A (re)started container is judged afresh; the log of earlier runs is kept.
            let health = self.status.health.get_or_insert_with(Health::default);
            health.status = HealthState::Starting;
            health.failing_streak = 0;
            self.health_next = Some(now + self.probe_interval(now));
        }
        vec![Action::Save]
    }

    fn exited(&mut self, code: i32, oom: bool, at: String, now: Instant) -> Vec<Action> {
        let Some(since) = self.running_since.take() else { return Vec::new() };
        // With `pid: host` other processes of the container may be left; they go with it.
        let mut actions = vec![Action::KillAll];
        if self.probe.take().is_some() {
            actions.push(Action::DropProbe);
        }
        self.health_next = None;
        self.stop_deadline = None;
        self.status.exit_code = Some(code);
        self.status.oom_killed = oom;
        self.status.pid = 0;
        self.status.finished_at = Some(at);
        let restart = !self.status.stopped_by_user
            && match &self.rules.restart {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure(max) => {
                    code != 0 && max.is_none_or(|m| self.status.restart_count < m)
                }
            };
        if restart {
            if now.saturating_duration_since(since) >= RESET_BACKOFF_AFTER {
                self.backoff = FIRST_BACKOFF;
            }
            self.restart_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            self.status.state = State::Restarting;
            actions.push(Action::Save);
        } else {
            // The shim records it together with its own end.
            self.status.state = State::Exited;
        }
        actions
    }

    fn stop(&mut self, grace: Option<Duration>, signal: Option<i32>, now: Instant) -> Vec<Action> {
        self.status.stopped_by_user = true;
        if self.restart_at.take().is_some() {
            self.status.state = State::Exited;
            return vec![Action::Save];
        }
        if self.running_since.is_none() {
            return Vec::new();
        }
        let grace = grace.or(self.rules.stop_grace).unwrap_or(DEFAULT_STOP_GRACE);
        let deadline = now + grace;
        // A second stop may shorten the wait, never lengthen it.
        self.stop_deadline = Some(self.stop_deadline.map_or(deadline, |d| d.min(deadline)));
        let signal = signal.or(self.rules.stop_signal).unwrap_or(libc::SIGTERM);
        vec![Action::Signal(signal), Action::Save]
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            self.status.restart_count += 1;
            actions.push(Action::Restart);
        }
        if self.stop_deadline.is_some_and(|t| t <= now) {
            self.stop_deadline = None;
            if self.running_since.is_some() {
                actions.push(Action::KillAll);
            }
        }
        if let Some(p) = &mut self.probe
            && !p.timed_out
            && p.deadline <= now
        {
            p.timed_out = true;
            actions.push(Action::KillProbe);
        }
        if self.probe.is_none() && self.health_next.is_some_and(|t| t <= now) {
            self.health_next = None;
            if let (Some(h), Some(_)) = (&self.rules.healthcheck, self.running_since) {
                self.probe = Some(ProbeClock {
                    deadline: now + Duration::from_millis(h.timeout_ms.max(1)),
                    timed_out: false,
                });
                actions.push(Action::StartProbe);
            }
        }
        actions
    }

    fn probe_finished(
        &mut self,
        code: i32,
        output: String,
        start: String,
        end: String,
        now: Instant,
    ) -> Vec<Action> {
        let Some(probe) = self.probe.take() else { return Vec::new() };
        let (code, output) =
            if probe.timed_out { (-1, PROBE_TIMEOUT_OUTPUT.to_string()) } else { (code, output) };
        let retries = self.rules.healthcheck.as_ref().map_or(3, |h| h.retries.max(1));
        let in_start_period = self.start_period_end.is_some_and(|end| now < end);
        let health = self.status.health.get_or_insert_with(Health::default);
        health.log.push(HealthResult { start, end, exit_code: code, output });
        if health.log.len() > HEALTH_LOG_LEN {
            health.log.remove(0);
        }
        if code == 0 {
            health.status = HealthState::Healthy;
            health.failing_streak = 0;
            // A pass ends the start period, as docker decides.
            self.start_period_end = None;
        } else if !(in_start_period && health.status == HealthState::Starting) {
            // During the start period, failures of a container not yet healthy don't count.
            health.failing_streak += 1;
            if health.failing_streak >= retries {
                health.status = HealthState::Unhealthy;
            }
        }
        if self.running_since.is_some() {
            self.health_next = Some(now + self.probe_interval(now));
        }
        vec![Action::Save]
    }

    /// Time to the next probe: `start_interval` during the start period when set, else
    /// `interval`.
    fn probe_interval(&self, now: Instant) -> Duration {
        let Some(h) = &self.rules.healthcheck else { return Duration::from_secs(30) };
        let in_start_period = self.start_period_end.is_some_and(|end| now < end);
        if in_start_period && h.start_interval_ms > 0 {
            Duration::from_millis(h.start_interval_ms)
        } else {
            Duration::from_millis(h.interval_ms.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rules(restart: RestartPolicy) -> Rules {
        Rules { restart, healthcheck: None, stop_signal: None, stop_grace: None }
    }

    fn health(
        interval_ms: u64,
        timeout_ms: u64,
        retries: u32,
        start_period_ms: u64,
        start_interval_ms: u64,
    ) -> HealthcheckSpec {
        HealthcheckSpec {
            command: vec!["true".into()],
            interval_ms,
            timeout_ms,
            retries,
            start_period_ms,
            start_interval_ms,
        }
    }

    /// A lifecycle under test with its own clock.
    struct Clock {
        life: Lifecycle,
        now: Instant,
    }

    impl Clock {
        fn new(rules: Rules) -> Clock {
            Clock { life: Lifecycle::new(rules, ContainerStatus::default()), now: Instant::now() }
        }
        fn at(&mut self, after: Duration) -> &mut Clock {
            self.now += after;
            self
        }
        fn on(&mut self, event: Event) -> Vec<Action> {
            self.life.handle(event, self.now)
        }
        fn start(&mut self) -> Vec<Action> {
            self.on(Event::Started { pid: 42, at: "t".into() })
        }
        fn exit(&mut self, code: i32) -> Vec<Action> {
            self.on(Event::Exited { code, oom: false, at: "t".into() })
        }
        fn probe(&mut self, code: i32) -> Vec<Action> {
            self.on(Event::ProbeFinished { code, output: String::new(), start: "s".into(), end: "e".into() })
        }
        /// Moves the clock to the next deadline and ticks.
        fn next(&mut self) -> Vec<Action> {
            let d = self.life.next_deadline().expect("a deadline");
            self.now = self.now.max(d);
            self.on(Event::Tick)
        }
        fn health(&self) -> &Health {
            self.life.status.health.as_ref().expect("health")
        }
    }

    #[test]
    fn no_restart_policy_ends_after_the_first_exit() {
        let mut c = Clock::new(rules(RestartPolicy::No));
        assert_eq!(c.start(), vec![Action::Save]);
        assert_eq!(c.life.status.state, State::Running);
        assert_eq!(c.life.status.pid, 42);
        assert_eq!(c.at(MS).exit(3), vec![Action::KillAll]);
        assert_eq!(c.life.status.state, State::Exited);
        assert_eq!(c.life.status.exit_code, Some(3));
        assert_eq!(c.life.status.pid, 0);
        assert!(c.life.is_over());
        assert_eq!(c.life.next_deadline(), None);
    }

    #[test]
    fn back_off_doubles_from_100ms_to_a_minute() {
        let mut c = Clock::new(rules(RestartPolicy::Always));
        c.start();
        let mut waits = Vec::new();
        for _ in 0..12 {
            let exited_at = c.at(MS).now;
            assert_eq!(c.exit(0), vec![Action::KillAll, Action::Save]);
            assert_eq!(c.life.status.state, State::Restarting);
            assert!(!c.life.is_over());
            let due = c.life.next_deadline().unwrap();
            waits.push((due - exited_at).as_millis());
            // Nothing happens before the deadline.
            c.now = due - MS;
            assert_eq!(c.on(Event::Tick), vec![]);
            assert_eq!(c.next(), vec![Action::Restart]);
            c.start();
        }
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]);
        assert_eq!(c.life.status.restart_count, 12);
    }

    #[test]
    fn a_run_of_ten_seconds_resets_the_back_off() {
        let mut c = Clock::new(rules(RestartPolicy::Always));
        c.start();
        for _ in 0..4 {
            c.at(MS).exit(1);
            c.next();
            c.start();
        }
        // The fifth wait would be 1.6 s; a run of 10 s starts over at 100 ms.
        let exited_at = c.at(RESET_BACKOFF_AFTER).now;
        c.exit(1);
        assert_eq!(c.life.next_deadline().unwrap() - exited_at, FIRST_BACKOFF);
        c.next();
        c.start();
        let exited_at = c.at(MS).now;
        c.exit(1);
        assert_eq!(c.life.next_deadline().unwrap() - exited_at, FIRST_BACKOFF * 2);
    }

    #[test]
    fn on_failure_3_runs_four_times_and_not_after_success() {
        let mut c = Clock::new(rules(RestartPolicy::OnFailure(Some(3))));
        c.start();
        let mut runs = 1;
        loop {
            c.at(MS).exit(2);
            if c.life.is_over() {
                break;
            }
            assert_eq!(c.next(), vec![Action::Restart]);
            c.start();
            runs += 1;
        }
        assert_eq!(runs, 4);
        assert_eq!(c.life.status.restart_count, 3);
        assert_eq!(c.life.status.state, State::Exited);

        let mut ok = Clock::new(rules(RestartPolicy::OnFailure(None)));
        ok.start();
        ok.at(MS).exit(0);
        assert!(ok.life.is_over(), "exit 0 is no failure");
    }

    #[test]
    fn a_user_stop_ends_always_and_unless_stopped() {
        for policy in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            let mut c = Clock::new(rules(policy));
            c.start();
            let acts = c.on(Event::StopRequested { grace: Some(Duration::from_secs(2)), signal: None });
            assert_eq!(acts, vec![Action::Signal(libc::SIGTERM), Action::Save]);
            c.at(MS).exit(143);
            assert!(c.life.is_over());
            assert_eq!(c.life.status.state, State::Exited);
            assert_eq!(c.life.status.exit_code, Some(143));
        }
    }

    #[test]
    fn a_stop_during_the_back_off_cancels_the_restart() {
        let mut c = Clock::new(rules(RestartPolicy::Always));
        c.start();
        c.at(MS).exit(1);
        assert!(c.life.restart_pending());
        assert_eq!(c.on(Event::StopRequested { grace: None, signal: None }), vec![Action::Save]);
        assert!(c.life.is_over());
        assert_eq!(c.life.status.state, State::Exited);
    }

    #[test]
    fn a_kill_by_a_user_is_not_restarted() {
        let mut c = Clock::new(rules(RestartPolicy::Always));
        c.start();
        assert_eq!(c.on(Event::Killed { signal: libc::SIGKILL }), vec![]);
        c.at(MS).exit(137);
        assert!(c.life.is_over());
    }

    #[test]
    fn a_kill_ends_restarts_as_docker_decides() {
        const RT3: i32 = 37;
        // No stop signal of its own: any kill.
        for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGHUP, RT3] {
            assert!(kill_ends_restarts(None, sig), "{sig}");
        }
        // Its own stop signal, or SIGKILL; nothing else.
        assert!(kill_ends_restarts(Some(RT3), RT3));
        assert!(kill_ends_restarts(Some(RT3), libc::SIGKILL));
        assert!(kill_ends_restarts(Some(libc::SIGTERM), libc::SIGTERM));
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, RT3 + 1] {
            assert!(!kill_ends_restarts(Some(RT3), sig), "{sig}");
        }
        assert!(!kill_ends_restarts(Some(libc::SIGQUIT), libc::SIGTERM));
    }

    #[test]
    fn a_kill_with_another_signal_than_the_own_stop_signal_keeps_the_policy() {
        let own = Rules { stop_signal: Some(libc::SIGQUIT), ..rules(RestartPolicy::Always) };
        let mut c = Clock::new(own.clone());
        c.start();
        c.on(Event::Killed { signal: libc::SIGTERM });
        assert!(!c.life.status.stopped_by_user);
        c.at(MS).exit(143);
        assert!(c.life.restart_pending(), "restarted as the policy says");
        assert_eq!(c.life.status.state, State::Restarting);

        // During the back-off: another signal leaves the restart in place, its own calls it off.
        assert_eq!(c.on(Event::Killed { signal: libc::SIGTERM }), vec![]);
        assert!(c.life.restart_pending());
        assert_eq!(c.on(Event::Killed { signal: libc::SIGQUIT }), vec![Action::Save]);
        assert!(c.life.is_over());
        assert_eq!(c.life.status.state, State::Exited);

        let mut c = Clock::new(own);
        c.start();
        c.on(Event::Killed { signal: libc::SIGQUIT });
        assert!(c.life.status.stopped_by_user);
        c.at(MS).exit(131);
        assert!(c.life.is_over(), "its own stop signal ends it for good");
        assert_eq!(c.life.status.state, State::Exited);
    }

    #[test]
    fn stop_kills_after_the_grace_time_and_a_second_stop_only_shortens_it() {
        let mut c = Clock::new(Rules {
            stop_signal: Some(libc::SIGQUIT),
            stop_grace: Some(Duration::from_secs(5)),
            ..rules(RestartPolicy::No)
        });
        c.start();
        let start = c.now;
        assert_eq!(
            c.on(Event::StopRequested { grace: None, signal: None })[0],
            Action::Signal(libc::SIGQUIT)
        );
        assert_eq!(c.life.next_deadline(), Some(start + Duration::from_secs(5)));
        c.on(Event::StopRequested { grace: Some(Duration::from_secs(30)), signal: Some(libc::SIGINT) });
        assert_eq!(c.life.next_deadline(), Some(start + Duration::from_secs(5)), "not lengthened");
        c.on(Event::StopRequested { grace: Some(Duration::from_secs(1)), signal: None });
        assert_eq!(c.life.next_deadline(), Some(start + Duration::from_secs(1)));
        assert_eq!(c.next(), vec![Action::KillAll]);
        c.at(MS).exit(137);
        assert!(c.life.is_over());
    }

    #[test]
    fn a_stop_of_an_exited_container_does_nothing() {
        let mut c = Clock::new(rules(RestartPolicy::No));
        c.start();
        c.exit(0);
        assert_eq!(c.on(Event::StopRequested { grace: None, signal: None }), vec![]);
    }

    #[test]
    fn a_failed_restart_ends_the_container_with_its_error() {
        let mut c = Clock::new(rules(RestartPolicy::Always));
        c.start();
        c.at(MS).exit(1);
        c.next();
        assert_eq!(c.on(Event::StartFailed { error: "no such file".into() }), vec![Action::Save]);
        assert!(c.life.is_over());
        assert_eq!(c.life.status.error.as_deref(), Some("no such file"));
    }

    #[test]
    fn healthcheck_retries_make_it_unhealthy_and_a_pass_makes_it_healthy() {
        let mut c =
            Clock::new(Rules { healthcheck: Some(health(1000, 500, 3, 0, 0)), ..rules(RestartPolicy::No) });
        c.start();
        assert_eq!(c.health().status, HealthState::Starting);
        for streak in 1..=3 {
            assert_eq!(c.next(), vec![Action::StartProbe]);
            c.at(10 * MS).probe(1);
            assert_eq!(c.health().failing_streak, streak);
        }
        assert_eq!(c.health().status, HealthState::Unhealthy);
        c.next();
        c.at(MS).probe(0);
        assert_eq!(c.health().status, HealthState::Healthy);
        assert_eq!(c.health().failing_streak, 0);
        for _ in 0..2 {
            c.next();
            c.at(MS).probe(0);
        }
        assert_eq!(c.health().log.len(), HEALTH_LOG_LEN, "only the last five of six results are kept");
        assert_eq!(c.health().log[0].exit_code, 1);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_and_start_interval_applies() {
        let mut c = Clock::new(Rules {
            healthcheck: Some(health(10_000, 500, 1, 5_000, 1_000)),
            ..rules(RestartPolicy::No)
        });
        let start = c.now;
        c.start();
        // start_interval during the start period.
        assert_eq!(c.life.next_deadline(), Some(start + Duration::from_secs(1)));
        c.next();
        c.probe(1);
        assert_eq!(c.health().status, HealthState::Starting, "a failure in the start period does not count");
        assert_eq!(c.health().failing_streak, 0);
        // A pass ends the start period: the next probe is an interval away.
        c.next();
        c.probe(0);
        assert_eq!(c.health().status, HealthState::Healthy);
        let passed = c.now;
        assert_eq!(c.life.next_deadline(), Some(passed + Duration::from_secs(10)));
        c.next();
        c.probe(1);
        assert_eq!(
            c.health().status,
            HealthState::Unhealthy,
            "retries 1: one failure after the start period"
        );
    }

    #[test]
    fn a_probe_that_runs_out_of_time_is_killed_and_counts_as_failed() {
        let mut c =
            Clock::new(Rules { healthcheck: Some(health(1000, 300, 1, 0, 0)), ..rules(RestartPolicy::No) });
        c.start();
        c.next();
        let probe_started = c.now;
        assert_eq!(c.life.next_deadline(), Some(probe_started + 300 * MS));
        assert_eq!(c.next(), vec![Action::KillProbe]);
        // Killed, it is reaped with SIGKILL's status; the result says timeout.
        assert_eq!(c.life.next_deadline(), None, "no second kill, no probe while one is in flight");
        c.at(MS).probe(137);
        let last = c.health().log.last().unwrap();
        assert_eq!(last.exit_code, -1);
        assert_eq!(last.output, PROBE_TIMEOUT_OUTPUT);
        assert_eq!(c.health().status, HealthState::Unhealthy);
    }

    #[test]
    fn an_exit_drops_the_probe_in_flight_and_a_restart_judges_health_afresh() {
        let mut c = Clock::new(Rules {
            healthcheck: Some(health(1000, 300, 1, 0, 0)),
            ..rules(RestartPolicy::Always)
        });
        c.start();
        c.next();
        assert_eq!(c.at(MS).exit(1), vec![Action::KillAll, Action::DropProbe, Action::Save]);
        // A result that arrives after the drop is ignored.
        assert_eq!(c.probe(0), vec![]);
        c.next();
        c.start();
        assert_eq!(c.health().status, HealthState::Starting);
    }

    #[test]
    fn no_probe_after_the_container_exited() {
        let mut c =
            Clock::new(Rules { healthcheck: Some(health(1000, 300, 1, 0, 0)), ..rules(RestartPolicy::No) });
        c.start();
        c.at(MS).exit(0);
        assert_eq!(c.life.next_deadline(), None);
        assert!(c.life.is_over());
    }
}
