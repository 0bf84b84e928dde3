//! Device access on cgroup v2: the kernel has no `devices.allow` there; a program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup decides each open and
//! mknod of a device node. berth assembles that program from the same rules it writes to
//! `devices.allow` on v1 (`c 1:3 rwm`, `c *:* m`, ...): allow what a rule covers, deny the
//! rest, as runc and crun do.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One allow rule: `type major:minor access`, with `*` for any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// `b`, `c` or `a` (any).
    pub kind: char,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Subset of `BPF_DEVCG_ACC_*`: mknod 1, read 2, write 4.
    pub access: u32,
}

const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// Parses a v1-style rule such as `c 136:* rwm`.
pub fn parse_rule(text: &str) -> Option<DeviceRule> {
    let mut parts = text.split_whitespace();
    let kind = parts.next()?.chars().next()?;
    if !matches!(kind, 'a' | 'b' | 'c') {
        return None;
    }
    let (major, minor) = match parts.next() {
        None => (None, None),
        Some(mm) => {
            let (a, b) = mm.split_once(':')?;
            let num = |s: &str| if s == "*" { Some(None) } else { s.parse().ok().map(Some) };
            (num(a)?, num(b)?)
        }
    };
    let mut access = 0;
    for c in parts.next().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return None,
        };
    }
    Some(DeviceRule { kind, major, minor, access })
}

/// One eBPF instruction, as the kernel reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0xf), off, imm }
}

// Opcodes (class | op | source).
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_EXIT: u8 = 0x95;

/// The program: load the device type (r2), requested access (r3), major (r4) and minor (r5)
/// from the context, then for each rule jump to the next rule on any mismatch, else return 1
/// (allow); after the last rule, return 0 (deny).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        let mut block: Vec<Insn> = Vec::new();
        // Each check jumps to the end of the block (to the next rule) when it fails; the
        // offsets are patched once the block's length is known.
        let mut jumps: Vec<usize> = Vec::new();
        match rule.kind {
            'b' => {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_BLOCK));
            }
            'c' => {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_CHAR));
            }
            _ => {}
        }
        if rule.access & (ACC_MKNOD | ACC_READ | ACC_WRITE) != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // The requested access must be within the allowed: (r3 & allowed) == r3.
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, rule.access as i32));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = rule.major {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let end = block.len();
        for j in jumps {
            block[j].off = (end - j - 1) as i16;
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    // The kernel checks that bytes past what it knows are zero; leave room for them.
    pad: [u8; 64],
}

#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u8; 44],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a properly laid out, zero-padded bpf_attr of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `cgroup`.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> io::Result<()> {
    let prog = program(rules);
    let license = c"Apache";
    let mut log = vec![0u8; 4096];
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *b"berth_devices\0\0\0",
        prog_ifindex: 0,
        expected_attach_type: 0,
        pad: [0; 64],
    };
    let fd = bpf(BPF_PROG_LOAD, &mut load).map_err(|e| {
        let text = String::from_utf8_lossy(&log).trim_end_matches('\0').trim().to_string();
        if text.is_empty() { e } else { io::Error::new(e.kind(), format!("{e}: {text}")) }
    })?;
    // SAFETY: the kernel just returned this new descriptor.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir = File::open(cgroup)?;
    let mut at = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        pad: [0; 44],
    };
    bpf(BPF_PROG_ATTACH, &mut at)?;
    // The attachment holds the program; our descriptor can go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_like_devices_allow() {
        assert_eq!(
            parse_rule("c 136:* rwm"),
            Some(DeviceRule { kind: 'c', major: Some(136), minor: None, access: 7 })
        );
        assert_eq!(
            parse_rule("b *:* m"),
            Some(DeviceRule { kind: 'b', major: None, minor: None, access: 1 })
        );
        assert_eq!(parse_rule("a"), Some(DeviceRule { kind: 'a', major: None, minor: None, access: 7 }));
        assert_eq!(parse_rule("x 1:2 r"), None);
        assert_eq!(parse_rule("c 1:2 q"), None);
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let rules = [parse_rule("c 1:3 rw").unwrap(), parse_rule("a").unwrap()];
        let p = program(&rules);
        // Prologue 6; rule 1: type check, 3 access insns, major, minor, mov, exit = 8.
        assert_eq!(p.len(), 6 + 8 + 2 + 2);
        // Every jump of rule 1 lands on the first instruction of rule 2 (index 14).
        for (i, ins) in p.iter().enumerate().take(14).skip(6) {
            if ins.code == JMP_JNE_K || ins.code == JMP_JNE_X {
                assert_eq!(i as i16 + 1 + ins.off, 14, "insn {i}");
            }
        }
        // Rule 2 ("a", all access) allows unconditionally; the program ends with deny.
        assert_eq!(p[14], insn(ALU64_MOV_K, 0, 0, 0, 1));
        assert_eq!(p[p.len() - 2], insn(ALU64_MOV_K, 0, 0, 0, 0));
    }
}
