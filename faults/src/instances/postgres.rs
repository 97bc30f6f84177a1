//! A private PostgreSQL server: `initdb` into a scratch folder, `pg_ctl` on a
//! free port with the socket in that folder.
//!
//! `initdb` and `pg_ctl` refuse to run as root. As root, the scratch folder
//! is handed to the `postgres` OS user and both run as that user through
//! `runuser`, from `/`, because that user may not enter root's home, which is
//! where tests usually run from.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};

use tokio::process::Command;
use tracing::{debug, warn};

use super::ports::{self, PortLease};
use super::{PATIENCE, PORT_ATTEMPTS, ScratchDir, failure, log_tail, running_as_root};

/// Where the private servers' ports start: PostgreSQL's own port, moved up
/// below the ephemeral range.
const FIRST_PORT: u16 = 25432;

/// How a server is stopped: `pg_ctl stop -m <mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Waits until every client has disconnected, then shuts down cleanly.
    Smart,
    /// Disconnects every client and shuts down cleanly, with a checkpoint.
    Fast,
    /// Stops at once, without a checkpoint, as a crash would: the next start
    /// replays the write-ahead log. Committed data survives.
    Immediate,
}

impl fmt::Display for StopMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        })
    }
}

/// A PostgreSQL server of its own, on `127.0.0.1` and a free port, with
/// `trust` authentication: user `postgres` connects without a password.
///
/// Stopping and starting it again keeps its data. Dropping it stops it with
/// `pg_ctl stop -m immediate` and removes its folder, data and all; drop
/// blocks while it does, which is brief.
pub struct PrivatePostgres {
    bin: PathBuf,
    lease: PortLease,
    /// Whether `initdb` and `pg_ctl` run as the `postgres` OS user.
    as_postgres: bool,
    dir: ScratchDir,
}

impl PrivatePostgres {
    /// Creates a database cluster in a fresh scratch folder and starts a
    /// server on it, on the first free port from 25432 up. Uses the newest
    /// `/usr/lib/postgresql/<version>/bin`.
    pub async fn start() -> io::Result<PrivatePostgres> {
        let bin = newest_bin_dir()?;
        let dir = ScratchDir::new("corebank-pg")?;
        let as_postgres = running_as_root();
        if as_postgres {
            hand_to_postgres_user(dir.path()).await?;
        }
        let mut postgres = PrivatePostgres {
            bin,
            lease: ports::lease(FIRST_PORT)?,
            as_postgres,
            dir,
        };
        postgres.initdb().await?;
        let mut attempt = 1;
        loop {
            let Err(error) = postgres.launch().await else {
                debug!(port = postgres.port(), dir = %postgres.dir().display(), "private postgres started");
                return Ok(postgres);
            };
            if attempt == PORT_ATTEMPTS || !postgres.lost_port_race() {
                return Err(error);
            }
            debug!(
                port = postgres.port(),
                "port taken meanwhile, trying another"
            );
            postgres.lease = ports::lease(FIRST_PORT)?;
            attempt += 1;
        }
    }

    /// The TCP port the server listens on, on `127.0.0.1`. It stays the same
    /// across stops and starts.
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// `127.0.0.1:<port>`, for a fault proxy to stand in front of.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()))
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: no password, since
    /// the server trusts every local connection.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port())
    }

    /// The scratch folder holding the data folder, the server log and the
    /// Unix socket. It is gone once the value is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The folder of the PostgreSQL programs in use, `psql` among them.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server's log, appended to by every start.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    /// Stops the server and waits until it is down; stopping a stopped
    /// server does nothing.
    pub async fn stop(&mut self, mode: StopMode) -> io::Result<()> {
        if !self.is_running().await {
            return Ok(());
        }
        let mut pg_ctl = self.pg_ctl();
        pg_ctl
            .args(["-m", &mode.to_string(), "-w", "-t"])
            .arg(PATIENCE.as_secs().to_string())
            .arg("stop");
        let output = Command::from(pg_ctl).output().await?;
        self.check(&output, "pg_ctl stop failed")?;
        debug!(port = self.port(), %mode, "private postgres stopped");
        Ok(())
    }

    /// Starts the server again on the same port and data, after
    /// [`PrivatePostgres::stop`]; recovers first if it was stopped
    /// [`StopMode::Immediate`]. Starting a running server does nothing.
    pub async fn start_again(&mut self) -> io::Result<()> {
        if self.is_running().await {
            return Ok(());
        }
        self.launch().await?;
        debug!(port = self.port(), "private postgres started again");
        Ok(())
    }

    /// Whether the server is running, as `pg_ctl status` sees it.
    pub async fn is_running(&self) -> bool {
        let mut pg_ctl = self.pg_ctl();
        pg_ctl.arg("status");
        Command::from(pg_ctl)
            .output()
            .await
            .is_ok_and(|output| output.status.success())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    async fn initdb(&self) -> io::Result<()> {
        let mut initdb = self.tool("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            // Tests want a fast, predictable cluster, not a durable one.
            .args(["--no-locale", "--no-sync"]);
        let output = Command::from(initdb).output().await?;
        self.check(&output, "initdb failed")
    }

    /// `pg_ctl start` on the current port, waiting until connections are
    /// accepted.
    async fn launch(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port(),
            self.dir().display(),
        );
        let mut pg_ctl = self.pg_ctl();
        pg_ctl
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t"])
            .arg(PATIENCE.as_secs().to_string())
            .arg("-o")
            .arg(options)
            .arg("start");
        let output = Command::from(pg_ctl).output().await?;
        self.check(&output, "pg_ctl start failed")
    }

    /// Whether the last start failed because the port was taken between the
    /// probe and the server's bind.
    fn lost_port_race(&self) -> bool {
        log_tail(&self.log_path(), 10).contains("Address already in use")
    }

    /// An error with the command's output and the log's tail, unless it
    /// succeeded.
    fn check(&self, output: &Output, what: &str) -> io::Result<()> {
        if output.status.success() {
            return Ok(());
        }
        let details = format!(
            "{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            log_tail(&self.log_path(), 20),
        );
        Err(failure(&format!("{what} ({})", output.status), &details))
    }

    /// `pg_ctl -D <data>`, as the right user.
    fn pg_ctl(&self) -> StdCommand {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir());
        pg_ctl
    }

    /// One of the PostgreSQL programs, as the `postgres` OS user when
    /// running as root, from `/`, with no input.
    fn tool(&self, name: &str) -> StdCommand {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut runuser = StdCommand::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            StdCommand::new(program)
        };
        command.current_dir("/").stdin(Stdio::null());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut pg_ctl = self.pg_ctl();
        pg_ctl
            .args(["-m", "immediate", "-w", "-t"])
            .arg(PATIENCE.as_secs().to_string())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Fails when the server is not running, which is fine.
        if let Err(error) = pg_ctl.status() {
            warn!(port = self.port(), %error, "could not stop a private postgres");
        }
        // The scratch folder goes with `self.dir`, after this.
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn newest_bin_dir() -> io::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root)
        .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", root.display())))?;
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            // Versions compare as numbers: 9.6 < 10 < 15.
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no initdb under /usr/lib/postgresql/*/bin",
            )
        })
}

/// Gives `dir` to the `postgres` OS user, so the server can write there.
async fn hand_to_postgres_user(dir: &Path) -> io::Result<()> {
    let output = Command::new("chown")
        .arg("postgres:")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .await?;
    if output.status.success() {
        return Ok(());
    }
    Err(failure(
        "a private postgres run as root needs the postgres OS user, since initdb refuses root",
        &String::from_utf8_lossy(&output.stderr),
    ))
}
