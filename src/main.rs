//! `ringlog`: the log server (`ringlog serve`) and its command line client (`topic`, `produce`,
//! `consume`).

mod command;
mod settings;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use command::error::CliError;
use command::Command;

/// Exit code of a failed command (clap uses 2 for bad usage).
const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that cannot be parsed.
const EXIT_USAGE: u8 = 2;

/// A partitioned, append-only log server, and its command line client.
#[derive(Debug, Parser)]
#[command(name = "ringlog", version, propagate_version = true)]
struct Cli {
    /// Server the client commands talk to.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "RINGLOG_SERVER",
        default_value = "127.0.0.1:9292"
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    init_logging(cli.command.default_log_filter());
    match cli.command.run(&cli.server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_closed_output(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // A closed stderr leaves nobody to tell; the exit code still says it.
            let _ = writeln!(io::stderr(), "error: {}", error_line(&error));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Help and version go out as clap writes them; a usage error becomes one line on stderr.
fn usage_error(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Nothing sensible is left to do when stdout or stderr is gone.
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(EXIT_USAGE))
        }
        _ => {
            let _ = writeln!(io::stderr(), "{}", one_line(&error.render().to_string()));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// clap's multi-line message (error, tips, usage) as one line: the usage part is dropped and
/// the remaining lines are joined with "; ", except a line ending in ':' which introduces the
/// next one; clap's pointer to --help is shortened.
fn one_line(message: &str) -> String {
    let body = message.split("\nUsage:").next().unwrap_or(message);
    let mut line = String::new();
    let parts = body
        .lines()
        .map(str::trim)
        .filter(|part| !part.is_empty() && !part.starts_with("For more information"));
    for part in parts {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    line.push_str(" (see --help)");
    line
}

/// The cause chain joined with ": " on one line, like "{:#}", except that a cause whose text
/// the message before it already ends with is not repeated (errors that show their source
/// in their own message: "cannot listen on ADDR: Address already in use").
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// True when the command stopped because its reader closed stdout (`| head`): not a failure.
fn is_closed_output(error: &anyhow::Error) -> bool {
    if let Some(cli) = error.downcast_ref::<CliError>() {
        return cli.is_closed_output();
    }
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// Logs to stderr, filtered by `RINGLOG_LOG` (a `tracing` filter; invalid directives are
/// skipped) or `default_filter`.
fn init_logging(default_filter: &str) {
    let directives = std::env::var("RINGLOG_LOG").unwrap_or_else(|_| default_filter.to_owned());
    let filter = EnvFilter::builder().parse_lossy(directives);
    // Only fails when a subscriber is already installed, which main never does twice.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_one_line() {
        let error = Cli::try_parse_from(["ringlog", "topic", "create", "t"]).unwrap_err();
        let line = one_line(&error.render().to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains("--partitions"), "{line}");

        let error = Cli::try_parse_from(["ringlog", "consume", "t", "--from", "x"]).unwrap_err();
        let line = one_line(&error.render().to_string());
        assert!(line.contains("expected earliest, latest"), "{line}");
    }

    #[test]
    fn server_defaults_and_parses_everywhere() {
        let cli = Cli::try_parse_from(["ringlog", "topic", "list", "--server", "h:1"]).unwrap();
        assert_eq!(cli.server, "h:1");
        let cli = Cli::try_parse_from(["ringlog", "--server", "h:2", "produce", "t"]).unwrap();
        assert_eq!(cli.server, "h:2");
    }
}
