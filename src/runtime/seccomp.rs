//! Seccomp filters: berth's default (what docker's default profile blocks) and docker's JSON
//! profile format for `security_opt: seccomp=FILE`. Filters are compiled by `seccompiler`; one
//! seccompiler filter has a single match action, so a profile with several actions becomes a
//! stack of filters (the kernel runs all and keeps the highest-precedence answer).

use std::collections::{BTreeMap, HashSet};

use caps::Capability;
use seccompiler::{BpfProgram, TargetArch};
use serde::Deserialize;
use serde_json::{Value, json};

/// A profile that cannot be turned into a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not docker's JSON format.
    #[error("seccomp profile: {0}")]
    Profile(String),
    /// seccompiler refused the filter.
    #[error("seccomp filter: {0}")]
    Compile(String),
    /// This machine's architecture has no syscall table in seccompiler.
    #[error("seccomp: unsupported architecture {0}")]
    Arch(String),
}

/// Syscalls docker's default profile refuses (EPERM), each with the capability that lifts the
/// ban (`None`: always refused).
const DEFAULT_BLOCKED: &[(&str, Option<Capability>)] = &[
    ("acct", Some(Capability::CAP_SYS_PACCT)),
    ("add_key", None),
    ("bpf", Some(Capability::CAP_SYS_ADMIN)),
    ("clock_adjtime", Some(Capability::CAP_SYS_TIME)),
    ("clock_settime", Some(Capability::CAP_SYS_TIME)),
    ("create_module", None),
    ("delete_module", Some(Capability::CAP_SYS_MODULE)),
    ("finit_module", Some(Capability::CAP_SYS_MODULE)),
    ("init_module", Some(Capability::CAP_SYS_MODULE)),
    ("get_kernel_syms", None),
    ("get_mempolicy", Some(Capability::CAP_SYS_NICE)),
    ("mbind", Some(Capability::CAP_SYS_NICE)),
    ("set_mempolicy", Some(Capability::CAP_SYS_NICE)),
    ("move_pages", Some(Capability::CAP_SYS_NICE)),
    ("ioperm", Some(Capability::CAP_SYS_RAWIO)),
    ("iopl", Some(Capability::CAP_SYS_RAWIO)),
    ("kcmp", Some(Capability::CAP_SYS_PTRACE)),
    ("process_vm_readv", Some(Capability::CAP_SYS_PTRACE)),
    ("process_vm_writev", Some(Capability::CAP_SYS_PTRACE)),
    ("kexec_file_load", Some(Capability::CAP_SYS_BOOT)),
    ("kexec_load", Some(Capability::CAP_SYS_BOOT)),
    ("reboot", Some(Capability::CAP_SYS_BOOT)),
    ("keyctl", None),
    ("request_key", None),
    ("lookup_dcookie", Some(Capability::CAP_SYS_ADMIN)),
    ("mount", Some(Capability::CAP_SYS_ADMIN)),
    ("umount2", Some(Capability::CAP_SYS_ADMIN)),
    ("pivot_root", Some(Capability::CAP_SYS_ADMIN)),
    ("setns", Some(Capability::CAP_SYS_ADMIN)),
    ("unshare", Some(Capability::CAP_SYS_ADMIN)),
    ("swapon", Some(Capability::CAP_SYS_ADMIN)),
    ("swapoff", Some(Capability::CAP_SYS_ADMIN)),
    ("quotactl", Some(Capability::CAP_SYS_ADMIN)),
    ("perf_event_open", Some(Capability::CAP_SYS_ADMIN)),
    ("fsopen", Some(Capability::CAP_SYS_ADMIN)),
    ("fsconfig", Some(Capability::CAP_SYS_ADMIN)),
    ("fsmount", Some(Capability::CAP_SYS_ADMIN)),
    ("fspick", Some(Capability::CAP_SYS_ADMIN)),
    ("open_tree", Some(Capability::CAP_SYS_ADMIN)),
    ("move_mount", Some(Capability::CAP_SYS_ADMIN)),
    ("name_to_handle_at", None),
    ("open_by_handle_at", Some(Capability::CAP_DAC_READ_SEARCH)),
    ("nfsservctl", None),
    ("query_module", None),
    ("settimeofday", Some(Capability::CAP_SYS_TIME)),
    ("sysfs", None),
    ("_sysctl", None),
    ("syslog", Some(Capability::CAP_SYSLOG)),
    ("uselib", None),
    ("userfaultfd", None),
    ("ustat", None),
    ("vhangup", Some(Capability::CAP_SYS_TTY_CONFIG)),
];

/// Namespace flags of clone(2) that docker's default profile refuses without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

fn arch() -> Result<TargetArch, SeccompError> {
    std::env::consts::ARCH.try_into().map_err(|_| SeccompError::Arch(std::env::consts::ARCH.into()))
}

/// The filters of berth's default profile for a process keeping `caps`, in install order.
pub fn default_filters(caps: &HashSet<Capability>) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut blocked: Vec<Value> = DEFAULT_BLOCKED
        .iter()
        .filter(|(_, lift)| lift.is_none_or(|c| !caps.contains(&c)))
        .map(|(name, _)| json!({ "syscall": name }))
        .collect();
    let mut filters = BTreeMap::new();
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        for flag in CLONE_NAMESPACE_FLAGS {
            // On x86_64 and aarch64 the flags are clone's first argument.
            blocked.push(json!({
                "syscall": "clone",
                "args": [{ "index": 0, "type": "qword", "op": { "masked_eq": flag }, "val": flag }]
            }));
        }
        // clone3 hides its flags in memory a filter cannot read: say it does not exist, so that
        // libc falls back to clone, as docker does.
        filters.insert(
            "b_clone3".to_string(),
            json!({ "mismatch_action": "allow", "match_action": { "errno": libc::ENOSYS },
                    "filter": [{ "syscall": "clone3" }] }),
        );
    }
    filters.insert(
        "a_blocked".to_string(),
        json!({ "mismatch_action": "allow", "match_action": { "errno": libc::EPERM }, "filter": blocked }),
    );
    compile(filters)
}

/// Compiles named seccompiler JSON filters, dropping syscall names this architecture lacks
/// (profiles list syscalls of every architecture). Returns the programs in name order.
fn compile(mut filters: BTreeMap<String, Value>) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = arch()?;
    loop {
        let text = Value::Object(filters.clone().into_iter().collect()).to_string();
        match seccompiler::compile_from_json(text.as_bytes(), arch) {
            Ok(mut map) => {
                return Ok(filters.keys().filter_map(|k| map.remove(k)).filter(|p| !p.is_empty()).collect());
            }
            // seccompiler keeps its frontend's error type private; its message names the syscall.
            Err(e) if unknown_syscall(&e).is_some() => {
                let name = unknown_syscall(&e).unwrap_or_default();
                let mut removed = false;
                for filter in filters.values_mut() {
                    if let Some(rules) = filter.get_mut("filter").and_then(Value::as_array_mut) {
                        let before = rules.len();
                        rules.retain(|r| r["syscall"] != name.as_str());
                        removed |= rules.len() != before;
                    }
                }
                if !removed {
                    return Err(SeccompError::Compile(format!("unknown syscall {name}")));
                }
                filters.retain(|_, f| f["filter"].as_array().is_some_and(|r| !r.is_empty()));
                if filters.is_empty() {
                    return Ok(Vec::new());
                }
            }
            Err(e) => return Err(SeccompError::Compile(e.to_string())),
        }
    }
}

/// The syscall name in seccompiler's "Invalid syscall name: NAME for given arch" error.
fn unknown_syscall(e: &seccompiler::Error) -> Option<String> {
    let text = e.to_string();
    let rest = text.split_once("Invalid syscall name: ")?.1;
    Some(rest.split_once(" for given arch")?.0.to_string())
}

/// docker's seccomp profile format (the parts that decide what a filter does).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<DockerSyscalls>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscalls {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<DockerArg>,
    #[serde(default)]
    includes: DockerFilter,
    #[serde(default)]
    excludes: DockerFilter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerFilter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerArg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

fn action_json(action: &str, errno: Option<u32>) -> Result<Value, SeccompError> {
    Ok(match action {
        "SCMP_ACT_ALLOW" => json!("allow"),
        "SCMP_ACT_ERRNO" => json!({ "errno": errno.unwrap_or(libc::EPERM as u32) }),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => json!("kill_thread"),
        "SCMP_ACT_KILL_PROCESS" => json!("kill_process"),
        "SCMP_ACT_TRAP" => json!("trap"),
        "SCMP_ACT_LOG" => json!("log"),
        "SCMP_ACT_TRACE" => json!({ "trace": errno.unwrap_or(0) }),
        other => return Err(SeccompError::Profile(format!("unknown action {other:?}"))),
    })
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The filters for a profile in docker's JSON format, for a process keeping `caps`.
pub fn profile_filters(profile: &str, caps: &HashSet<Capability>) -> Result<Vec<BpfProgram>, SeccompError> {
    let profile: DockerProfile = serde_json::from_str(profile)
        .map_err(|e| SeccompError::Profile(format!("not docker's format: {e}")))?;
    let default = action_json(&profile.default_action, profile.default_errno_ret)?;
    let has_cap = |name: &String| {
        super::capabilities::parse_capability(name).map(|c| caps.contains(&c)).unwrap_or(false)
    };
    // Rules that allow go into the first filter, whose mismatch is the default action; every
    // other action gets a filter of its own that lets everything else through.
    let mut allow_rules: Vec<Value> = Vec::new();
    let mut by_action: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    for entry in &profile.syscalls {
        if !entry.includes.caps.iter().all(has_cap)
            || (!entry.excludes.caps.is_empty() && entry.excludes.caps.iter().any(has_cap))
            || (!entry.includes.arches.is_empty()
                && !entry.includes.arches.iter().any(|a| a == docker_arch()))
            || entry.excludes.arches.iter().any(|a| a == docker_arch())
        {
            continue;
        }
        let mut args = Vec::new();
        for a in &entry.args {
            let (op, val) = match a.op.as_str() {
                "SCMP_CMP_EQ" => (json!("eq"), a.value),
                "SCMP_CMP_NE" => (json!("ne"), a.value),
                "SCMP_CMP_LT" => (json!("lt"), a.value),
                "SCMP_CMP_LE" => (json!("le"), a.value),
                "SCMP_CMP_GT" => (json!("gt"), a.value),
                "SCMP_CMP_GE" => (json!("ge"), a.value),
                "SCMP_CMP_MASKED_EQ" => (json!({ "masked_eq": a.value }), a.value_two),
                other => return Err(SeccompError::Profile(format!("unknown operator {other:?}"))),
            };
            args.push(json!({ "index": a.index, "type": "qword", "op": op, "val": val }));
        }
        let action = action_json(&entry.action, entry.errno_ret)?;
        let names = entry.names.iter().chain(entry.name.iter());
        for name in names {
            let rule = if args.is_empty() {
                json!({ "syscall": name })
            } else {
                json!({ "syscall": name, "args": args })
            };
            if action == json!("allow") {
                allow_rules.push(rule);
            } else {
                // The first filter must let it through so that this action's filter decides.
                allow_rules.push(json!({ "syscall": name }));
                by_action
                    .entry(action.to_string())
                    .or_insert_with(|| (action.clone(), Vec::new()))
                    .1
                    .push(rule);
            }
        }
    }
    let mut filters = BTreeMap::new();
    if default != json!("allow") {
        filters.insert(
            "a_default".to_string(),
            json!({ "mismatch_action": default, "match_action": "allow", "filter": allow_rules }),
        );
    }
    for (i, (_, (action, rules))) in by_action.into_iter().enumerate() {
        if action != default {
            filters.insert(
                format!("b_{i:04}"),
                json!({ "mismatch_action": "allow", "match_action": action, "filter": rules }),
            );
        }
    }
    compile(filters)
}

/// Filters as bytes, to keep them beside a container's spec: per program, its instruction
/// count (u32, little endian), then its instructions (code u16, jt u8, jf u8, k u32).
pub fn encode(filters: &[BpfProgram]) -> Vec<u8> {
    let mut out = Vec::new();
    for program in filters {
        out.extend_from_slice(&(program.len() as u32).to_le_bytes());
        for ins in program {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.extend_from_slice(&[ins.jt, ins.jf]);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    out
}

/// The filters [`encode`] wrote; `None` when the bytes are not exactly that (a file cut short
/// by a crash: the caller compiles afresh).
pub fn decode(mut bytes: &[u8]) -> Option<Vec<BpfProgram>> {
    let mut filters = Vec::new();
    while !bytes.is_empty() {
        let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let body = bytes.get(4..4 + count.checked_mul(8)?)?;
        let program: BpfProgram = body
            .chunks_exact(8)
            .map(|c| seccompiler::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        // A BPF program is at most 4096 instructions and never empty.
        if program.is_empty() || program.len() > 4096 {
            return None;
        }
        filters.push(program);
        bytes = &bytes[4 + count * 8..];
    }
    Some(filters)
}

/// The kernel's `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Installs filters on the calling thread, in order. seccompiler's own installer always sets
/// `no_new_privs` first; docker sets it only when asked, so berth calls seccomp(2) itself and
/// relies on holding CAP_SYS_ADMIN when `no_new_privs` is not set.
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        let prog = SockFprog { len: filter.len() as libc::c_ushort, filter: filter.as_ptr() };
        // SAFETY: prog points at a live, correctly sized BPF program for the whole call.
        let rc = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const SockFprog)
        };
        if rc != 0 {
            return Err(SeccompError::Compile(format!(
                "install filter: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_with_and_without_sys_admin() {
        let none = HashSet::new();
        assert_eq!(default_filters(&none).unwrap().len(), 2);
        let admin: HashSet<_> = [Capability::CAP_SYS_ADMIN].into_iter().collect();
        assert_eq!(default_filters(&admin).unwrap().len(), 1);
    }

    #[test]
    fn filters_survive_encoding_and_cut_bytes_are_refused() {
        let filters = default_filters(&HashSet::new()).unwrap();
        let bytes = encode(&filters);
        assert_eq!(decode(&bytes), Some(filters));
        assert_eq!(decode(&bytes[..bytes.len() - 3]), None);
        assert_eq!(decode(&[0, 0, 0, 0]), None);
        assert_eq!(decode(&[]), Some(Vec::new()));
    }

    #[test]
    fn docker_profile_is_translated() {
        let profile = r#"{
          "defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [
            {"names": ["read", "write", "exit_group", "not_a_syscall_anywhere_xyz"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
          ]
        }"#;
        let filters = profile_filters(profile, &HashSet::new()).unwrap();
        assert_eq!(filters.len(), 2);
        assert!(profile_filters("{\"defaultAction\": \"SCMP_ACT_NOPE\"}", &HashSet::new()).is_err());
        assert!(profile_filters("not json", &HashSet::new()).is_err());
    }
}
