//! Server settings: the TOML file, then `RINGLOG_<FIELD>` environment variables, then flags.

use std::path::Path;

use anyhow::{bail, Context};
use ringlog_net::server::ServerConfig;

/// Reads `file` (if any) and applies `RINGLOG_*` overrides from `vars` (see
/// [`ServerConfig::from_toml_and_env`]).
pub fn load(
    file: Option<&Path>,
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<ServerConfig> {
    let table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            text.parse::<toml::Table>().map_err(|error| {
                anyhow::anyhow!(
                    "config file {} is not valid TOML: {}",
                    path.display(),
                    toml_error_line(&text, &error)
                )
            })?
        }
        None => toml::Table::new(),
    };
    match ServerConfig::from_toml_and_env(table, vars) {
        Ok(config) => Ok(config),
        Err(error) => bail!("{error}"),
    }
}

/// The `RINGLOG_*` environment variables as strings (see [`ServerConfig::env_vars`]).
pub fn ringlog_vars() -> anyhow::Result<Vec<(String, String)>> {
    // The message alone: "invalid configuration" would mislead for an encoding problem.
    ServerConfig::env_vars().map_err(|error| anyhow::anyhow!("{}", error.0))
}

/// A TOML syntax error on one line: "line L, column C: what" (toml's own text quotes the
/// line over several).
fn toml_error_line(text: &str, error: &toml::de::Error) -> String {
    let what = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(span) = error.span() else {
        return what;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    format!("line {line}, column {column}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_override_the_file_and_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringlog.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nrequests_in_flight_max = 8\n",
        )
        .unwrap();
        let vars = [(
            "RINGLOG_REQUESTS_IN_FLIGHT_MAX".to_string(),
            "16".to_string(),
        )];
        let config = load(Some(&path), vars.into_iter()).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.requests_in_flight_max, 16);
        let missing = dir.path().join("missing.toml");
        let error = load(Some(&missing), std::iter::empty()).unwrap_err();
        assert!(
            error.to_string().contains("cannot read config file"),
            "{error}"
        );
    }
}
