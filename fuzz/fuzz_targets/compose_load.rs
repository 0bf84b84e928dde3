//! A compose file, as bytes, through what `berth config` does: load (parse, interpolate,
//! validate, canonicalise, merge, normalize, check, decode) and render as YAML and JSON. Errors
//! are fine; panics, stack overflows, hangs and runaway memory are what this looks for.
//!
//! The file is an in-memory file (memfd) passed as `-f /proc/self/fd/N`, so the loader reads it
//! as it reads any file; the project directory does not exist, so nothing beside it is read.
#![no_main]

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use berth::compose::ProjectOptions;
use berth::compose::render::{Format, render};
use berth::graph::load_project;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; a negative result is checked.
    let fd = unsafe { libc::memfd_create(c"berth-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` is a new descriptor that nothing else owns; the File closes it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(data).expect("write to memfd");

    let dir = PathBuf::from("/nonexistent/berth-fuzz");
    let env: HashMap<String, String> =
        [("HOME", "/nonexistent/home"), ("TAG", "1.0"), ("EMPTY", "")].map(|(k, v)| (k.into(), v.into())).into();
    let mut opts = ProjectOptions::new(dir.clone(), env);
    opts.project_dir = Some(dir);
    opts.files = vec![PathBuf::from(format!("/proc/self/fd/{fd}"))];
    opts.project_name = Some("fuzz".into());
    if let Ok(loaded) = load_project(&opts) {
        let _ = render(&loaded.project, Format::Yaml, true);
        let _ = render(&loaded.project, Format::Json, true);
    }
    drop(file);
});
