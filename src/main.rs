fn main() -> std::process::ExitCode {
    berth::run_cli()
}
