//! Reloads that can fail: the daemon's control socket and the `repayd reload` client that
//! the unit's `ExecReload=` runs.
//!
//! Under systemd the daemon listens on `$RUNTIME_DIRECTORY/control.sock` (the unit's
//! `RuntimeDirectory=repayd`, so `/run/repayd/control.sock`, mode 0600, owner repayd). A
//! client writes `reload\n`; the daemon re-reads the configuration, the templates and the
//! calendar, applies them whole or keeps all the old settings, tells systemd
//! (`RELOADING=1` + `MONOTONIC_USEC`, then `READY=1` and a `STATUS=` naming what is in
//! force), and only then answers `ok <status>` or `rejected <reason>`. The client exits 0
//! or 78, so `systemctl reload repayd` fails when the new settings were refused and
//! returns only once they are in force.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The socket's file name inside the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Where an admin's `repayd reload` looks when `$RUNTIME_DIRECTORY` is not set.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/repayd";

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The daemon's control socket [default: $RUNTIME_DIRECTORY/control.sock, else
    /// /run/repayd/control.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// How long to wait for the daemon's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

/// The socket path the daemon binds, when it runs with a runtime directory.
pub fn daemon_socket_path() -> Option<PathBuf> {
    runtime_dir().map(|d| d.join(SOCKET_NAME))
}

fn runtime_dir() -> Option<PathBuf> {
    // systemd sets a colon-separated list when the unit names several directories.
    let dirs = std::env::var("RUNTIME_DIRECTORY").ok()?;
    let first = dirs.split(':').next()?.trim();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// `repayd reload`: asks the running daemon to reload and reports its answer. Exit 0 when
/// the new settings are in force, 78 when they were rejected (the old ones still run), 1
/// when the daemon could not be asked.
pub async fn client(args: &ReloadArgs) -> anyhow::Result<ExitCode> {
    let path = args.socket.clone().unwrap_or_else(|| {
        daemon_socket_path().unwrap_or_else(|| Path::new(DEFAULT_RUNTIME_DIR).join(SOCKET_NAME))
    });
    let answer = tokio::time::timeout(Duration::from_secs(args.timeout), ask(&path, "reload"))
        .await
        .with_context(|| {
            format!(
                "no answer from the daemon on {} within {} s",
                path.display(),
                args.timeout
            )
        })??;
    match answer.split_once(' ').unwrap_or((answer.as_str(), "")) {
        ("ok", status) => {
            println!("reloaded: {status}");
            Ok(ExitCode::SUCCESS)
        }
        ("rejected", reason) => {
            tracing::error!("reload rejected, the previous settings stay in force: {reason}");
            Ok(ExitCode::from(crate::config::EXIT_CONFIG as u8))
        }
        _ => anyhow::bail!("unexpected answer from {}: {answer:?}", path.display()),
    }
}

async fn ask(path: &Path, request: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the daemon's control socket {} (is `repayd run` running under systemd?)",
            path.display()
        )
    })?;
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    stream.shutdown().await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer.trim_end().to_string())
}

/// The daemon's side: serves `reload` requests on `path` with `reload` until the task is
/// dropped. A stale socket file from a killed process is replaced.
pub fn serve<F>(path: PathBuf, reload: F) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
    }
    let reload = std::sync::Arc::new(reload);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let reload = std::sync::Arc::clone(&reload);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read);
                let read =
                    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
                        .await;
                let answer = match (read, line.trim()) {
                    (Ok(Ok(_)), "reload") => {
                        // Reloading reads files: off the async workers.
                        match tokio::task::spawn_blocking(move || reload()).await {
                            Ok(Ok(status)) => format!("ok {status}\n"),
                            Ok(Err(reason)) => format!("rejected {reason}\n"),
                            Err(e) => format!("rejected reload task failed: {e}\n"),
                        }
                    }
                    (Ok(Ok(_)), other) => format!("error unknown request {other:?}\n"),
                    _ => "error no request\n".to_string(),
                };
                let _ = write.write_all(answer.as_bytes()).await;
                let _ = write.shutdown().await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_reports_the_daemons_answer_and_fails_on_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(SOCKET_NAME);
        let outcomes = std::sync::Mutex::new(vec![
            Err("configuration key `debit.batch_size`: must be at least 1".to_string()),
            Ok("settings in force: x.toml (sha256 0123456789ab)".to_string()),
        ]);
        let server = serve(socket.clone(), move || {
            outcomes.lock().unwrap().pop().unwrap()
        })
        .unwrap();
        let mode = std::fs::metadata(&socket).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let args = ReloadArgs {
            socket: Some(socket.clone()),
            timeout: 5,
        };
        assert_eq!(client(&args).await.unwrap(), ExitCode::SUCCESS);
        assert_eq!(
            client(&args).await.unwrap(),
            ExitCode::from(crate::config::EXIT_CONFIG as u8)
        );
        assert_eq!(
            ask(&socket, "shutdown").await.unwrap(),
            "error unknown request \"shutdown\""
        );
        server.abort();
        // Nobody listening: an error that names the socket, not a hang.
        let _ = server.await;
        drop(std::fs::remove_file(&socket));
        let err = client(&args).await.unwrap_err();
        assert!(format!("{err:#}").contains("control.sock"), "{err:#}");
    }
}
