//! `image load` on arbitrary bytes: any input is loaded or refused with an error, never a
//! panic, a hang or a file outside the store; a refused load stores nothing.
#![no_main]

use berth::image::{ImageStore, load};
use berth::state::Dirs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::Builder::new().prefix("berth-fuzz-").tempdir() else { return };
    let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
    let Ok(store) = ImageStore::open(&dirs) else { return };
    let result = load::load(&store, &mut &data[..], "fuzz.tar");
    if result.is_err() {
        let blobs = std::fs::read_dir(dirs.images().join("blobs/sha256")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(blobs, 0, "a refused load stores nothing");
        assert!(store.list().is_ok_and(|l| l.is_empty()), "a refused load names nothing");
    }
    // Nothing may land beside the store.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(names.iter().all(|n| n == "root" || n == "run"), "{names:?}");
    drop(store);
    let _ = dir.close();
});
