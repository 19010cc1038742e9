//! Checks made before any load starts that need the file system or the network: enough free
//! space for what the run writes, and a `--server` that answers.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::disk_space;
use crate::options::{OptionsError, RunConfig, Target};

/// How long to wait for `--server` to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs every check for `config`, whose data will live under `data_dir`.
pub fn check(config: &RunConfig, data_dir: &Path) -> Result<(), OptionsError> {
    let free_bytes = disk_space::free_bytes(data_dir).map_err(|error| {
        OptionsError(format!(
            "cannot tell the free space under {}: {error}",
            data_dir.display()
        ))
    })?;
    config.check_free_space(free_bytes)?;
    if let Target::Server(address) = &config.target {
        check_server_answers(address)?;
    }
    Ok(())
}

/// Fails unless some address of `address` (`HOST:PORT`) accepts a TCP connection.
pub fn check_server_answers(address: &str) -> Result<(), OptionsError> {
    let candidates = address
        .to_socket_addrs()
        .map_err(|error| OptionsError(format!("--server {address} does not resolve: {error}")))?;
    let mut last_error = None;
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
    }
    let reason = last_error.map_or_else(|| "no address".to_string(), |error| error.to_string());
    Err(OptionsError(format!(
        "no server answers at --server {address}: {reason}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_listening_server_answers_and_a_closed_port_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert!(check_server_answers(&address).is_ok());
        drop(listener);
        let error = check_server_answers(&address).unwrap_err().0;
        assert!(
            error.starts_with("no server answers at --server"),
            "{error}"
        );
    }
}
