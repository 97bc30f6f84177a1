//! Free TCP ports for private servers.
//!
//! A probe can only say a port was free a moment ago: something may bind it
//! before the server does. Two guards narrow that window. Every process using
//! this crate leases a port by locking a file named after it in a shared lock
//! folder, so parallel test processes (one per test, under nextest) never pick
//! the same port; the lock goes when the lease is dropped or the process
//! dies. And within a process a port is handed out once and never again, so a
//! client still retrying an old server's port never reaches a new server.
//! Whatever else binds a port meanwhile, the starts meet by retrying on a
//! fresh one.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// Where Linux's ephemeral range begins; ports from here up are left alone.
const EPHEMERAL_START: u16 = 32768;

/// The shared servers' ports, never handed out even when they look free:
/// PostgreSQL, AMQP, Erlang distribution, the management plugin and epmd.
const SHARED: [u16; 5] = [5432, 5672, 25672, 15672, 4369];

/// Every port handed out by this process so far.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port held for one server until dropped.
pub(crate) struct PortLease {
    port: u16,
    /// Holds the lock on the port's file; closing it releases the lease.
    _lock: File,
}

impl PortLease {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

/// Leases the first port from `first` up, below the ephemeral range, that
/// nothing listens on, no other process holds a lease on, and this process
/// has not handed out before.
pub(crate) fn lease(first: u16) -> io::Result<PortLease> {
    let folder = lock_folder()?;
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    for port in first..EPHEMERAL_START {
        if SHARED.contains(&port) || taken.contains(&port) {
            continue;
        }
        let Some(lock) = try_lock(folder.join(format!("{port}.lock")))? else {
            continue;
        };
        if bindable(port) {
            taken.insert(port);
            return Ok(PortLease { port, _lock: lock });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("no free port between {first} and {EPHEMERAL_START}"),
    ))
}

/// The lock folder, shared by every user like the temp folder itself.
fn lock_folder() -> io::Result<PathBuf> {
    let folder = std::env::temp_dir().join("corebank-ports");
    if !folder.is_dir() {
        fs::create_dir_all(&folder)?;
        // Another user's tests must be able to add lock files too; only an
        // owner may remove one.
        let _ = fs::set_permissions(&folder, Permissions::from_mode(0o1777));
    }
    Ok(folder)
}

/// The locked file, or `None` when another process holds its lock.
fn try_lock(path: PathBuf) -> io::Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => file,
        // Another user's file: a read-only descriptor locks just as well.
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => File::open(&path)?,
        Err(error) => return Err(error),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Whether a listener could bind `127.0.0.1:port` right now. A listener on
/// any address, `0.0.0.0` included, makes it fail.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_never_handed_out_twice() {
        let first = lease(31000).unwrap();
        let port = first.port();
        drop(first);
        let second = lease(port).unwrap();
        assert!(second.port() > port);
    }

    #[test]
    fn a_port_leased_elsewhere_is_skipped() {
        let held = lease(31100).unwrap();
        let path = lock_folder().unwrap().join(format!("{}.lock", held.port()));
        // A second descriptor stands in for another process: flock locks
        // belong to the open file, not to the process.
        assert!(try_lock(path).unwrap().is_none());
    }

    #[test]
    fn a_port_something_listens_on_is_not_bindable() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let held = listener.local_addr().unwrap().port();
        assert!(!bindable(held));
        drop(listener);
        assert!(bindable(held));
    }

    #[test]
    fn the_shared_servers_ports_are_never_handed_out() {
        let lease = lease(5432).unwrap();
        assert!(!SHARED.contains(&lease.port()));
    }
}
