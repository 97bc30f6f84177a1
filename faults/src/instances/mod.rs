//! Private PostgreSQL and RabbitMQ servers for tests that stop or break one.
//!
//! The servers every other test shares must never go down under them, so a
//! test that stops, kills or restarts a server starts its own here:
//! [`PrivatePostgres`] (`initdb` and `pg_ctl` on a free port with its own
//! socket folder) and [`PrivateRabbit`] (a `rabbitmq-server` node with its own
//! name, ports, data folder and Erlang cookie), or several such nodes joined
//! as a [`PrivateRabbitCluster`]. Each lives in a scratch folder
//! under the system temp folder; dropping the value stops the server hard and
//! removes that folder, also while a panicking test unwinds. Only a process
//! killed outright (SIGKILL, `panic = "abort"`) leaves them behind.
//!
//! Ports come from below Linux's ephemeral range (32768-60999), scanning
//! upward from a fixed start and skipping any port something listens on or
//! another test process has leased: a port inside that range can be the local
//! end of some client's connection, which no probe can see and which makes
//! the server's bind fail.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use corebank_faults::{PrivatePostgres, PrivateRabbit, StopMode};
//!
//! let mut postgres = PrivatePostgres::start().await?;
//! // point the code under test at postgres.url() ...
//! postgres.stop(StopMode::Immediate).await?;
//! postgres.start_again().await?;
//!
//! let mut rabbit = PrivateRabbit::start().await?;
//! // point the code under test at rabbit.url() ...
//! rabbit.kill().await?;
//! rabbit.start_again().await?;
//! # Ok(())
//! # }
//! ```

mod cluster;
mod ports;
mod postgres;
mod process;
mod rabbit;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;

pub use self::cluster::{PrivateRabbitCluster, QueueMembers};
pub use self::postgres::{PrivatePostgres, StopMode};
pub use self::rabbit::PrivateRabbit;

/// How long a server may take to start, stop or die. A RabbitMQ node boots in
/// about ten seconds on an idle machine; several booting at once on a busy
/// two-core machine take far longer, and only a hung one should fail a test.
const PATIENCE: Duration = Duration::from_secs(90);

/// How often a booting or stopping server is looked at.
const POLL: Duration = Duration::from_millis(100);

/// How many fresh ports a first start tries when another process took the
/// one that was free a moment before.
const PORT_ATTEMPTS: usize = 5;

/// A folder of its own under the system temp folder, removed on drop.
struct ScratchDir {
    id: String,
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<temp>/<prefix>-<random id>`.
    fn new(prefix: &str) -> io::Result<ScratchDir> {
        loop {
            let id = format!("{:08x}", rand::random::<u32>());
            let path = std::env::temp_dir().join(format!("{prefix}-{id}"));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { id, path }),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The random part of the folder's name, to name what lives in it.
    fn id(&self) -> &str {
        &self.id
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), %error, "could not remove a private server's folder");
        }
    }
}

/// Whether this process runs as root, which `initdb` and `pg_ctl` refuse.
fn running_as_root() -> bool {
    // `/proc/self` belongs to the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// The last `lines` lines of a log file, to explain why a server failed.
fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An error saying what failed, with whatever output explains it.
fn failure(what: &str, details: &str) -> io::Error {
    let details = details.trim();
    if details.is_empty() {
        io::Error::other(what.to_owned())
    } else {
        io::Error::other(format!("{what}:\n{details}"))
    }
}
