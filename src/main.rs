//! keygate's entry point: everything is in the library (`keygate::cli::main`).

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
