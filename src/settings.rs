//! Server settings: the TOML file, then `RINGLOG_<FIELD>` environment variables, then flags.

use std::path::Path;

use anyhow::{bail, Context};
use ringlog_net::server::ServerConfig;

/// Prefix of environment variables that override config fields (`RINGLOG_CACHE_BYTES_PER_SHARD`).
const ENV_PREFIX: &str = "RINGLOG_";

/// Variables that are not config fields (they belong to the CLI itself).
const ENV_NOT_CONFIG: [&str; 3] = ["RINGLOG_SERVER", "RINGLOG_CONFIG", "RINGLOG_LOG"];

/// Reads `file` (if any) and applies `RINGLOG_*` overrides from `vars`.
pub fn load(
    file: Option<&Path>,
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<ServerConfig> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    for (key, value) in vars {
        let Some(field) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_CONFIG.contains(&key.as_str()) || field.is_empty() {
            continue;
        }
        table.insert(field.to_ascii_lowercase(), env_value(&value));
    }
    let config: ServerConfig = table.try_into().map_err(|error: toml::de::Error| {
        anyhow::anyhow!("invalid configuration: {}", error.message())
    })?;
    if let Err(error) = config.validate() {
        bail!("{error}");
    }
    Ok(config)
}

/// Environment values are integers when they look like one, else strings.
fn env_value(value: &str) -> toml::Value {
    match value.parse::<i64>() {
        Ok(number) => toml::Value::Integer(number),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_unknown_fields_are_errors() {
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
        let bad = [("RINGLOG_NO_SUCH_FIELD".to_string(), "1".to_string())];
        let error = load(None, bad.into_iter()).unwrap_err().to_string();
        assert!(error.contains("no_such_field"), "{error}");
    }
}
