//! Lifecycle hooks (`post_start`, `pre_stop`): commands run inside the container, as
//! docker compose runs them, with the hook's user, privileges, working dir and environment.

use crate::compose::model::ServiceHook;
use crate::runtime::ExecSpec;

use super::error::{EngineError, Result};
use super::host::ContainerHost;
use super::progress::Progress;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// After the container started.
    PostStart,
    /// Before the container is stopped.
    PreStop,
}

impl HookKind {
    fn name(self) -> &'static str {
        match self {
            HookKind::PostStart => "post_start",
            HookKind::PreStop => "pre_stop",
        }
    }
}

/// The exec that runs `hook`.
pub fn hook_exec(hook: &ServiceHook) -> ExecSpec {
    ExecSpec {
        args: hook.command.clone().unwrap_or_default(),
        env: hook.environment.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect(),
        user: hook.user.clone(),
        cwd: hook.working_dir.clone(),
        privileged: hook.privileged,
    }
}

/// Runs `hooks` one after the other in container `id` (named `name`); the first that fails
/// ends the run with its exit code. Their output goes to the progress view.
pub fn run_hooks(
    runtime: &dyn ContainerHost,
    id: &str,
    name: &str,
    kind: HookKind,
    hooks: &[ServiceHook],
    progress: &Progress,
) -> Result<()> {
    for hook in hooks {
        let exec = hook_exec(hook);
        if exec.args.is_empty() {
            continue;
        }
        progress.event("Container", name, &format!("Running {} hook", kind.name()), false);
        let (code, out, err) = runtime
            .exec_output(id, &exec)
            .map_err(EngineError::runtime(format!("container {name}: {} hook", kind.name())))?;
        for text in [out, err] {
            let text = String::from_utf8_lossy(&text);
            for line in text.lines() {
                progress.info(&format!("{name} {} hook: {line}", kind.name()));
            }
        }
        if code != 0 {
            return Err(EngineError::Hook {
                container: name.to_string(),
                hook: kind.name(),
                command: exec.args,
                code,
            });
        }
    }
    Ok(())
}
