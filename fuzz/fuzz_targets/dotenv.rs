//! Text through the dotenv readers of `.env`, `--env-file` and `env_file` (both formats).
#![no_main]

use berth::compose::dotenv;
use libfuzzer_sys::fuzz_target;

fn lookup(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/root".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = dotenv::parse(text, &lookup);
    let _ = dotenv::parse_raw(text);
});
