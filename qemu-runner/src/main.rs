//! `qemu-runner`: the command-line front of the library (see `qemu_runner::cli`).

fn main() {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(a) => args.push(a),
            Err(bad) => {
                eprintln!("strata: error: argument {bad:?} is not UTF-8");
                std::process::exit(qemu_runner::exit_status::USAGE);
            }
        }
    }
    std::process::exit(qemu_runner::cli::main(&args));
}
