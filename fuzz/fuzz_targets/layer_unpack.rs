//! The layer unpacker on arbitrary bytes (plain, gzip or zstd as the magic says): unpacked or
//! refused, never a panic or a file outside the layer dir.
#![no_main]

use berth::image::unpack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::Builder::new().prefix("berth-fuzz-").tempdir() else { return };
    let layer = dir.path().join("layer");
    if std::fs::create_dir(&layer).is_err() {
        return;
    }
    if let Ok((_, reader)) = unpack::decompressed(data) {
        let _ = unpack::unpack(reader, &layer);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec![std::ffi::OsString::from("layer")], "nothing outside the layer dir");
    let _ = dir.close();
});
