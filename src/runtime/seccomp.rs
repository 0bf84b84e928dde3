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
///
/// On x86_64 this is one program of berth's own making ([`default_program`]): a binary search
/// over the syscall numbers with a decision, so that a syscall costs a handful of comparisons and
/// the kernel's per-syscall cache, which it fills by running the filter once per syscall number
/// when the filter is installed, is cheap to fill. seccompiler's filters test the syscalls one by
/// one; they remain the way on other architectures.
pub fn default_filters(caps: &HashSet<Capability>) -> Result<Vec<BpfProgram>, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    {
        Ok(vec![default_program(caps)?])
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        default_filters_seccompiler(caps)
    }
}

/// The default profile through seccompiler: one linear filter per action.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn default_filters_seccompiler(caps: &HashSet<Capability>) -> Result<Vec<BpfProgram>, SeccompError> {
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

/// What the default profile does with one syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Fails with this errno.
    Errno(i32),
    /// clone(2): fails with EPERM when its flags (first argument) ask for a new namespace.
    CloneFlags,
}

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 syscalls have this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in the kernel's `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of the first argument (little endian).
const DATA_ARG0_LO: u32 = 16;
/// A leaf of the search tests at most this many numbers one by one.
const LEAF: usize = 3;

/// The syscall numbers of [`DEFAULT_BLOCKED`] on x86_64 (every name there has one).
#[cfg(target_arch = "x86_64")]
fn syscall_number(name: &str) -> Option<i64> {
    Some(match name {
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "bpf" => libc::SYS_bpf,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_settime" => libc::SYS_clock_settime,
        // Removed from the kernel, so not in libc: numbers from arch/x86/entry/syscalls/syscall_64.tbl.
        "create_module" => 174,
        "delete_module" => libc::SYS_delete_module,
        "finit_module" => libc::SYS_finit_module,
        "init_module" => libc::SYS_init_module,
        "get_kernel_syms" => 177,
        "get_mempolicy" => libc::SYS_get_mempolicy,
        "mbind" => libc::SYS_mbind,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "move_pages" => libc::SYS_move_pages,
        "ioperm" => libc::SYS_ioperm,
        "iopl" => libc::SYS_iopl,
        "kcmp" => libc::SYS_kcmp,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "reboot" => libc::SYS_reboot,
        "keyctl" => libc::SYS_keyctl,
        "request_key" => libc::SYS_request_key,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "setns" => libc::SYS_setns,
        "unshare" => libc::SYS_unshare,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "quotactl" => libc::SYS_quotactl,
        "perf_event_open" => libc::SYS_perf_event_open,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "open_tree" => libc::SYS_open_tree,
        "move_mount" => libc::SYS_move_mount,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "nfsservctl" => libc::SYS_nfsservctl,
        "query_module" => 178,
        "settimeofday" => libc::SYS_settimeofday,
        "sysfs" => libc::SYS_sysfs,
        "_sysctl" => libc::SYS__sysctl,
        "syslog" => libc::SYS_syslog,
        "uselib" => libc::SYS_uselib,
        "userfaultfd" => libc::SYS_userfaultfd,
        "ustat" => libc::SYS_ustat,
        "vhangup" => libc::SYS_vhangup,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        _ => return None,
    })
}

/// The default profile's decisions for a process keeping `caps`, by syscall number (sorted).
#[cfg(target_arch = "x86_64")]
fn default_decisions(caps: &HashSet<Capability>) -> Result<Vec<(u32, Decision)>, SeccompError> {
    let mut out = BTreeMap::new();
    let number = |name: &str| {
        syscall_number(name)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| SeccompError::Compile(format!("no syscall number for {name}")))
    };
    for (name, lift) in DEFAULT_BLOCKED {
        if lift.is_none_or(|c| !caps.contains(&c)) {
            out.insert(number(name)?, Decision::Errno(libc::EPERM));
        }
    }
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        out.insert(number("clone")?, Decision::CloneFlags);
        // clone3 hides its flags in memory a filter cannot read: say it does not exist, so
        // that libc falls back to clone, as docker does.
        out.insert(number("clone3")?, Decision::Errno(libc::ENOSYS));
    }
    Ok(out.into_iter().collect())
}

/// One instruction of a program being assembled: jumps name their targets by label.
enum Asm {
    Stmt(u16, u32),
    Jump(u16, u32, usize, usize),
    Label(usize),
}

/// A tiny assembler for classic BPF with forward jumps to labels.
#[derive(Default)]
struct Assembler {
    code: Vec<Asm>,
    labels: usize,
}

impl Assembler {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn stmt(&mut self, code: u32, k: u32) {
        self.code.push(Asm::Stmt(code as u16, k));
    }
    fn ret(&mut self, k: u32) {
        self.stmt(libc::BPF_RET | libc::BPF_K, k);
    }
    fn load(&mut self, offset: u32) {
        self.stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    }
    /// `if A <op> k goto yes else goto no`.
    fn jump(&mut self, op: u32, k: u32, yes: usize, no: usize) {
        self.code.push(Asm::Jump((libc::BPF_JMP | op | libc::BPF_K) as u16, k, yes, no));
    }
    fn place(&mut self, label: usize) {
        self.code.push(Asm::Label(label));
    }
    fn finish(self) -> Result<BpfProgram, SeccompError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut n = 0;
        for a in &self.code {
            match a {
                Asm::Label(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for a in self.code {
            match a {
                Asm::Label(_) => {}
                Asm::Stmt(code, k) => out.push(seccompiler::sock_filter { code, jt: 0, jf: 0, k }),
                Asm::Jump(code, k, yes, no) => {
                    let here = out.len() + 1;
                    let offset = |l: usize| {
                        at[l]
                            .checked_sub(here)
                            .and_then(|d| u8::try_from(d).ok())
                            .ok_or_else(|| SeccompError::Compile("filter jump out of range".into()))
                    };
                    out.push(seccompiler::sock_filter { code, jt: offset(yes)?, jf: offset(no)?, k });
                }
            }
        }
        Ok(out)
    }
}

/// The default profile as one BPF program: refuse other architectures and x32 numbers, then a
/// binary search over the numbers that get a decision; everything else is allowed.
#[cfg(target_arch = "x86_64")]
fn default_program(caps: &HashSet<Capability>) -> Result<BpfProgram, SeccompError> {
    let decisions = default_decisions(caps)?;
    let mut a = Assembler::default();
    let (native, search) = (a.label(), a.label());
    let kill = a.label();
    a.load(DATA_ARCH);
    a.jump(libc::BPF_JEQ, AUDIT_ARCH_X86_64, native, kill);
    a.place(kill);
    a.ret(SECCOMP_RET_KILL_PROCESS);
    a.place(native);
    a.load(DATA_NR);
    // x32 numbers would otherwise slip past a search over x86_64's numbers; docker's profile
    // allows x32 only as far as it allows x86_64, and no container here runs x32 programs.
    let x32 = a.label();
    a.jump(libc::BPF_JGE, X32_SYSCALL_BIT, x32, search);
    a.place(x32);
    a.ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    a.place(search);
    search_tree(&mut a, &decisions);
    a.finish()
}

/// Code deciding on the syscall number in A among `d` (sorted), allowing what is not there.
fn search_tree(a: &mut Assembler, d: &[(u32, Decision)]) {
    if d.len() <= LEAF {
        for (nr, decision) in d {
            let (yes, no) = (a.label(), a.label());
            a.jump(libc::BPF_JEQ, *nr, yes, no);
            a.place(yes);
            match decision {
                Decision::Errno(e) => a.ret(SECCOMP_RET_ERRNO | (*e as u32 & 0xffff)),
                Decision::CloneFlags => {
                    let (refuse, allow) = (a.label(), a.label());
                    let mask = CLONE_NAMESPACE_FLAGS.iter().fold(0u64, |m, f| m | f);
                    // Every namespace flag is in the low word of clone's first argument.
                    a.load(DATA_ARG0_LO);
                    a.jump(libc::BPF_JSET, mask as u32, refuse, allow);
                    a.place(refuse);
                    a.ret(SECCOMP_RET_ERRNO | libc::EPERM as u32);
                    a.place(allow);
                    a.ret(SECCOMP_RET_ALLOW);
                }
            }
            a.place(no);
        }
        a.ret(SECCOMP_RET_ALLOW);
        return;
    }
    let mid = d.len() / 2;
    let (low, high) = (a.label(), a.label());
    a.jump(libc::BPF_JGE, d[mid].0, high, low);
    a.place(low);
    search_tree(a, &d[..mid]);
    a.place(high);
    search_tree(a, &d[mid..]);
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

/// The first bytes of encoded filters (berth's seccomp file, version 2).
const MAGIC: &[u8; 8] = b"BERTHBP2";

/// Filters as bytes, to keep them beside a container's spec (`seccomp.bpf`) and to hand them
/// to the shim: [`MAGIC`], the number of programs (u32, little endian), per program its
/// instruction count (u32) and its instructions (code u16, jt u8, jf u8, k u32), then the
/// sha256 of all that. The count and the digest make a file cut short, emptied or overwritten
/// unreadable as a whole: without them a file cut between two programs, or emptied, would read
/// as fewer filters, or none, and the container would run less confined than its spec says.
pub fn encode(filters: &[BpfProgram]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(filters.len() as u32).to_le_bytes());
    for program in filters {
        out.extend_from_slice(&(program.len() as u32).to_le_bytes());
        for ins in program {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.extend_from_slice(&[ins.jt, ins.jf]);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    let digest = sha2::Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The filters [`encode`] wrote; `None` when the bytes are not exactly that (a file cut
/// short, emptied or overwritten: the caller compiles afresh from the spec).
pub fn decode(bytes: &[u8]) -> Option<Vec<BpfProgram>> {
    use sha2::Digest;
    let (body, digest) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if sha2::Sha256::digest(body).as_slice() != digest {
        return None;
    }
    let mut rest = body.strip_prefix(MAGIC.as_slice())?;
    let take_u32 = |rest: &mut &[u8]| -> Option<usize> {
        let (n, tail) = rest.split_first_chunk::<4>()?;
        *rest = tail;
        Some(u32::from_le_bytes(*n) as usize)
    };
    let programs = take_u32(&mut rest)?;
    let mut filters = Vec::new();
    for _ in 0..programs {
        let count = take_u32(&mut rest)?;
        // A BPF program is at most 4096 instructions and never empty.
        if count == 0 || count > 4096 {
            return None;
        }
        let (body, tail) = rest.split_at_checked(count * 8)?;
        rest = tail;
        let program: BpfProgram = body
            .chunks_exact(8)
            .map(|c| seccompiler::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        filters.push(program);
    }
    rest.is_empty().then_some(filters)
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
        assert!(!default_filters(&none).unwrap().is_empty());
        assert_eq!(default_filters_seccompiler(&none).unwrap().len(), 2);
        let admin: HashSet<_> = [Capability::CAP_SYS_ADMIN].into_iter().collect();
        assert_eq!(default_filters(&admin).unwrap().len(), 1);
        assert_eq!(default_filters_seccompiler(&admin).unwrap().len(), 1);
    }

    /// Runs a classic BPF program (the instructions seccomp filters use) on a `seccomp_data`.
    fn eval(program: &BpfProgram, nr: u32, arch: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let word = |k: u32| u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &program[pc];
            let code = u32::from(ins.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => acc = word(ins.k),
                c if c == libc::BPF_RET | libc::BPF_K => return ins.k,
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= ins.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += ins.k as usize,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        0x10 => acc == ins.k,
                        0x20 => acc > ins.k,
                        0x30 => acc >= ins.k,
                        0x40 => acc & ins.k != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    /// The kernel's answer of several filters: the one of highest precedence.
    fn decide(filters: &[BpfProgram], nr: u32, arch: u32, arg0: u64) -> u32 {
        filters.iter().map(|f| eval(f, nr, arch, arg0)).min_by_key(|r| (*r & 0xffff_0000) as i32).unwrap()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn binary_search_program_decides_as_the_seccompiler_filters_do() {
        let admin: HashSet<_> = [Capability::CAP_SYS_ADMIN].into_iter().collect();
        let some: HashSet<_> = [Capability::CAP_SYS_TIME, Capability::CAP_SYSLOG].into_iter().collect();
        let mask = CLONE_NAMESPACE_FLAGS.iter().fold(0u64, |m, f| m | f);
        assert_eq!(mask >> 32, 0, "the program tests only the low word of clone's flags");
        for caps in [HashSet::new(), admin, some] {
            let ours = default_filters(&caps).unwrap();
            let theirs = default_filters_seccompiler(&caps).unwrap();
            assert_eq!(ours.len(), 1);
            let args = [
                0,
                libc::SIGCHLD as u64,
                libc::CLONE_NEWNET as u64,
                libc::CLONE_NEWCGROUP as u64 | 0x11,
                libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64,
                1 << 40,
                u64::MAX,
            ];
            for nr in 0..600 {
                for arg in args {
                    assert_eq!(
                        decide(&ours, nr, AUDIT_ARCH_X86_64, arg),
                        decide(&theirs, nr, AUDIT_ARCH_X86_64, arg),
                        "syscall {nr}, arg0 {arg:#x}, caps {caps:?}"
                    );
                }
            }
            // Blocked names answer EPERM (unless lifted), clone with a namespace flag too.
            assert_eq!(decide(&ours, libc::SYS_keyctl as u32, AUDIT_ARCH_X86_64, 0), SECCOMP_RET_ERRNO | 1);
            assert_eq!(decide(&ours, libc::SYS_read as u32, AUDIT_ARCH_X86_64, 0), SECCOMP_RET_ALLOW);
            // Other architectures are killed, x32 numbers do not exist.
            assert_eq!(decide(&ours, 0, 0x4000_0003, 0), SECCOMP_RET_KILL_PROCESS);
            let x32_keyctl = X32_SYSCALL_BIT | libc::SYS_keyctl as u32;
            assert_eq!(
                decide(&ours, x32_keyctl, AUDIT_ARCH_X86_64, 0),
                SECCOMP_RET_ERRNO | libc::ENOSYS as u32
            );
            // A search costs a few comparisons, where the linear filters test every name.
            assert!(ours[0].len() < 200, "{} instructions", ours[0].len());
        }
    }

    /// How long installing the default filters takes (the kernel runs them once per syscall
    /// number to fill its cache), for seccompiler's linear filters and the binary search:
    /// `cargo test --release --lib seccomp_install_cost -- --ignored --nocapture`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[ignore]
    #[allow(clippy::print_stdout)] // a measurement for a person to read
    fn seccomp_install_cost() {
        let caps = HashSet::new();
        let compile_us = |f: &dyn Fn() -> Vec<BpfProgram>| {
            let t = std::time::Instant::now();
            for _ in 0..100 {
                std::hint::black_box(f());
            }
            t.elapsed().as_secs_f64() * 1e6 / 100.0
        };
        println!(
            "compile: seccompiler {:.1} us, search {:.1} us",
            compile_us(&|| default_filters_seccompiler(&caps).unwrap()),
            compile_us(&|| default_filters(&caps).unwrap())
        );
        for (name, filters) in [
            ("seccompiler", default_filters_seccompiler(&caps).unwrap()),
            ("search", default_filters(&caps).unwrap()),
        ] {
            let mut times = Vec::new();
            for _ in 0..200 {
                let mut fds = [0; 2];
                // SAFETY: a pipe into a plain array of two fds.
                assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
                // SAFETY: the child only makes system calls and exits without unwinding.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    let t = std::time::Instant::now();
                    let ok = install(&filters).is_ok();
                    let ns = if ok { t.elapsed().as_nanos() as u64 } else { u64::MAX };
                    // SAFETY: writes 8 bytes from a live u64, then exits at once.
                    unsafe {
                        libc::write(fds[1], (&ns as *const u64).cast(), 8);
                        libc::_exit(0);
                    }
                }
                let mut ns = 0u64;
                // SAFETY: reads 8 bytes into a live u64; waits for our own child.
                unsafe {
                    libc::read(fds[0], (&mut ns as *mut u64).cast(), 8);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                    libc::close(fds[0]);
                    libc::close(fds[1]);
                }
                assert_ne!(ns, u64::MAX, "install failed");
                times.push(ns);
            }
            times.sort();
            let len: usize = filters.iter().map(Vec::len).sum();
            println!(
                "{name}: {} programs, {len} instructions; install median {:.1} us (min {:.1}, max {:.1})",
                filters.len(),
                times[times.len() / 2] as f64 / 1e3,
                times[0] as f64 / 1e3,
                times[times.len() - 1] as f64 / 1e3
            );
        }
    }

    #[test]
    fn filters_survive_encoding_and_cut_bytes_are_refused() {
        let filters = default_filters(&HashSet::new()).unwrap();
        let bytes = encode(&filters);
        assert_eq!(decode(&bytes), Some(filters.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 3]), None);
        assert_eq!(decode(&[0, 0, 0, 0]), None);
        // Emptied, or cut anywhere (also between two programs), the file is unreadable: never
        // fewer filters than were written.
        assert_eq!(decode(&[]), None);
        let two = [filters.clone(), filters.clone()].concat();
        let both = encode(&two);
        assert_eq!(decode(&both).map(|f| f.len()), Some(two.len()));
        for cut in [0, 1, 8, 12, both.len() / 2, both.len() - 32, both.len() - 1] {
            assert_eq!(decode(&both[..cut]), None, "cut at {cut}");
        }
        // Overwritten: garbage of the same length, or one flipped bit.
        let garbage: Vec<u8> = (0..both.len()).map(|i| (i * 131 % 251) as u8).collect();
        assert_eq!(decode(&garbage), None);
        let mut flipped = both.clone();
        flipped[20] ^= 1;
        assert_eq!(decode(&flipped), None);
        // No filters (unconfined) is written as such, and is not an empty file.
        assert_eq!(decode(&encode(&[])), Some(Vec::new()));
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
