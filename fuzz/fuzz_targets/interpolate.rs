//! Strings through compose variable interpolation (`${VAR:-default}` and friends).
#![no_main]

use berth::compose::interpolate::interpolate;
use libfuzzer_sys::fuzz_target;

fn lookup(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value".into()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("$HOME ${X}".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(out) = interpolate(text, &lookup) {
        // Without a `$`, interpolation is the identity.
        if !text.contains('$') {
            assert_eq!(out, text);
        }
    }
});
