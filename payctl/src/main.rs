//! The `payctl` binary: parse, run, and turn any failure into one line on stderr and exit 1.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match payctl::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", payctl::cli::one_line(&e.render().to_string()));
            return ExitCode::from(1);
        }
    };
    match payctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", payctl::cli::one_line(&format!("error: {e:#}")));
            ExitCode::from(1)
        }
    }
}
