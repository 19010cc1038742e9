//! `ringlog-bench <scenario> [options]`: see the crate documentation of `ringlog_bench`.

use std::process::ExitCode;

use clap::Parser;
use ringlog_bench::options::{Cli, Invocation};
use ringlog_bench::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command.into_invocation() {
        Invocation::Run(workload, options) => run::run_workload(workload, &options),
        Invocation::Summary(args) => run::run_summary(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringlog-bench: {error}");
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}
