//! Links the `berth` binary as a position-dependent executable; see
//! `.cargo/config.toml` for why start latency wants a static non-PIE binary.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
}
