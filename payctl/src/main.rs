//! The `payctl` binary: parse, run, and turn any failure into one line on stderr: exit 2 for a
//! command line that does not parse (as every binary here), 1 for a command that failed.

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
            return ExitCode::from(2);
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
