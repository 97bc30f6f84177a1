//! A private RabbitMQ node: `rabbitmq-server` as a child process, with its
//! own node name, ports, data, logs, configuration and Erlang cookie, all in
//! a scratch folder.
//!
//! The node runs the release's own start script, not the `/usr/sbin` wrapper,
//! which as root switches to the `rabbitmq` OS user and writes its output
//! into the shared node's log folder. That script does not exec the Erlang VM
//! in the foreground: it starts it in the background and waits for it. So the
//! node runs in a process group of its own, and killing it means killing the
//! VM first (the script reaps it) and then whatever is left of the group.
//!
//! The node's environment is built from nothing, and `RABBITMQ_CONF_ENV_FILE`
//! points at an empty file: the machine's `rabbitmq-env.conf` would otherwise
//! rename the node to the shared one's name. `HOME` is the scratch folder,
//! which holds a cookie of its own, so the node and `rabbitmqctl` agree on
//! it. No plugin is enabled, so the node opens no management port.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, warn};

use super::ports::{self, PortLease};
use super::process::ProcessGroup;
use super::{PATIENCE, POLL, PORT_ATTEMPTS, ScratchDir, failure, log_tail};

/// Where AMQP ports start: 5672 moved up below the ephemeral range, clear of
/// the shared node's distribution port 25672.
const FIRST_AMQP_PORT: u16 = 26672;

/// Where Erlang distribution ports start.
const FIRST_DIST_PORT: u16 = 27672;

/// Written into the scratch folder; logs go to files there, not the console.
const CONFIG: &str = "log.console = false\nlog.file.level = info\n";

/// A RabbitMQ node of its own, on `127.0.0.1` and free ports, with the
/// default `guest` user (allowed because clients connect from localhost).
///
/// Stopping or killing it and starting it again keeps its data: durable
/// queues and persistent messages survive. Dropping it kills the node hard,
/// waits until none of its processes is left and removes its folder; drop
/// blocks while it does, which takes a moment.
pub struct PrivateRabbit {
    node: String,
    amqp: PortLease,
    dist: PortLease,
    sbin: PathBuf,
    /// The start script and the VM it started, while they run.
    server: Option<ProcessGroup>,
    dir: ScratchDir,
}

impl PrivateRabbit {
    /// Boots a fresh node named `corebank-<id>@localhost`, AMQP on the first
    /// free port from 26672 up, and returns once it accepts AMQP connections
    /// and `rabbitmqctl await_startup` agrees it has booted. That takes about
    /// ten seconds.
    pub async fn start() -> io::Result<PrivateRabbit> {
        Self::start_with_cookie(&new_cookie()).await
    }

    /// [`PrivateRabbit::start`] with the Erlang cookie given: nodes that are
    /// to form a cluster share one.
    pub(crate) async fn start_with_cookie(cookie: &str) -> io::Result<PrivateRabbit> {
        let sbin = sbin_dir()?;
        let dir = ScratchDir::new("corebank-rabbit")?;
        let node = format!("corebank-{}@localhost", dir.id());
        write_files(dir.path(), cookie)?;
        let mut rabbit = PrivateRabbit {
            node,
            amqp: ports::lease(FIRST_AMQP_PORT)?,
            dist: ports::lease(FIRST_DIST_PORT)?,
            sbin,
            server: None,
            dir,
        };
        let mut attempt = 1;
        loop {
            let Err(error) = rabbit.boot().await else {
                debug!(node = %rabbit.node, port = rabbit.port(), "private rabbitmq started");
                return Ok(rabbit);
            };
            if attempt == PORT_ATTEMPTS || !rabbit.lost_port_race() {
                return Err(error);
            }
            debug!(node = %rabbit.node, "port taken meanwhile, trying others");
            rabbit.amqp = ports::lease(FIRST_AMQP_PORT)?;
            rabbit.dist = ports::lease(FIRST_DIST_PORT)?;
            attempt += 1;
        }
    }

    /// The AMQP port on `127.0.0.1`. It stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.amqp.port()
    }

    /// `127.0.0.1:<port>`, for a fault proxy to stand in front of.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()))
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`, the default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port())
    }

    /// The node's name, `corebank-<id>@localhost`. The VM's command line
    /// carries it, so `pgrep -f <node>` finds the node's VM.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The scratch folder holding the node's data, logs, configuration and
    /// cookie. It is gone once the value is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the node's processes are still there. A node that is booting
    /// or shutting down counts as running.
    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(ProcessGroup::is_running)
    }

    /// Whether the node was started and not stopped or killed since, without
    /// looking at its processes.
    pub(crate) fn has_server(&self) -> bool {
        self.server.is_some()
    }

    /// Stops the node with `rabbitmqctl stop` and waits until its processes
    /// are gone. Stopping a node that is not running does nothing.
    pub async fn stop_gracefully(&mut self) -> io::Result<()> {
        if !self.is_running() {
            return self.kill().await;
        }
        self.rabbitmqctl(&["stop"]).await?;
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        if timeout(PATIENCE, server.wait()).await.is_err() {
            server.kill().await?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} did not stop within {PATIENCE:?}; killed it", self.node),
            ));
        }
        // The VM is gone once the script that waits for it has exited; this
        // only catches anything it left in the group.
        server.kill().await?;
        debug!(node = %self.node, "private rabbitmq stopped");
        Ok(())
    }

    /// Kills the node with SIGKILL, as a crash would, and waits until its
    /// processes are gone. Killing a node that is not running does nothing.
    pub async fn kill(&mut self) -> io::Result<()> {
        if let Some(server) = self.server.take() {
            server.kill().await?;
            debug!(node = %self.node, "private rabbitmq killed");
        }
        Ok(())
    }

    /// Boots the node again, with the same name, ports and data, after
    /// [`PrivateRabbit::stop_gracefully`] or [`PrivateRabbit::kill`].
    /// Starting a running node does nothing.
    pub async fn start_again(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.kill().await?;
        self.boot().await?;
        debug!(node = %self.node, "private rabbitmq started again");
        Ok(())
    }

    /// Starts the node and waits until it has booted; kills it if it does not.
    async fn boot(&mut self) -> io::Result<()> {
        // A pid file left by a killed node would name a process long gone.
        let _ = fs::remove_file(self.dir().join("rabbitmq.pid"));
        let console = File::create(self.console_log())?;
        let mut command = Command::new(self.sbin.join("rabbitmq-server"));
        self.environment(&mut command);
        command
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        self.server = Some(ProcessGroup::spawn(&mut command)?);
        if let Err(error) = self.wait_until_booted().await {
            self.kill().await?;
            return Err(error);
        }
        Ok(())
    }

    async fn wait_until_booted(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if !self.is_running() {
                return Err(self.boot_failure("exited while booting"));
            }
            // The AMQP listener opens late in the boot: only then is asking
            // `rabbitmqctl`, which costs a second of CPU, worth it.
            if TcpStream::connect(self.addr()).await.is_ok() {
                match self.rabbitmqctl(&["await_startup"]).await {
                    Ok(()) => return Ok(()),
                    Err(error) if Instant::now() >= deadline => return Err(error),
                    // Another process's listener on a port taken meanwhile
                    // answers while this node is not up yet: wait until the
                    // node is up, or fails on the taken port.
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(self.boot_failure("opened no AMQP port in time"));
            }
            sleep(POLL).await;
        }
    }

    /// Syncs the node's definitions log (Mnesia's) to disk. A queue declared
    /// moments before a SIGKILL is otherwise lost with it: the declare is
    /// answered before its record reaches the disk, and this node then
    /// boots with no such queue. A test that kills the node right after
    /// declaring what must survive syncs first.
    pub async fn sync_definitions(&self) -> io::Result<()> {
        self.rabbitmqctl(&["eval", "mnesia:sync_log()."]).await
    }

    /// Runs `rabbitmqctl -n <node> <args>`, failing after [`PATIENCE`].
    pub(crate) async fn rabbitmqctl(&self, args: &[&str]) -> io::Result<()> {
        self.rabbitmqctl_output(args).await.map(drop)
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns what it printed on
    /// stdout, failing after [`PATIENCE`] or when it fails.
    pub(crate) async fn rabbitmqctl_output(&self, args: &[&str]) -> io::Result<String> {
        let mut command = Command::new(self.sbin.join("rabbitmqctl"));
        self.environment(&mut command);
        command
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let what = format!("rabbitmqctl {}", args.join(" "));
        let output = timeout(PATIENCE, command.output())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{what} hung")))??;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let details = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        Err(failure(
            &format!("{what} failed ({})", output.status),
            &details,
        ))
    }

    /// The whole environment of the node and of `rabbitmqctl`.
    fn environment(&self, command: &mut Command) {
        let dir = self.dir();
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        command
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir)
            .env("LC_ALL", "C.UTF-8")
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port().to_string())
            .env("RABBITMQ_DIST_PORT", self.dist.port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
            // Only used if no epmd runs yet and the node has to start one.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            // The node takes its name from the environment, not from its
            // command line: an unused flag puts the name there for `pgrep`.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!(
                    "-kernel inet_dist_use_interface {{127,0,0,1}} -corebank_private_node {}",
                    self.node
                ),
            );
    }

    /// The last `lines` lines of the node's log: what a test shows when the
    /// node did something it did not expect.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.node_log(), lines)
    }

    fn console_log(&self) -> PathBuf {
        self.dir().join("console.log")
    }

    fn node_log(&self) -> PathBuf {
        self.dir().join("log").join(format!("{}.log", self.node))
    }

    /// Whether the last boot failed because a port was taken between the
    /// probe and the node's bind: a taken AMQP port shows as `eaddrinuse`,
    /// a taken distribution port as `dist_port_already_used`.
    fn lost_port_race(&self) -> bool {
        let logs = log_tail(&self.console_log(), 500) + &self.log_tail(200);
        logs.contains("eaddrinuse") || logs.contains("dist_port_already_used")
    }

    fn boot_failure(&self, what: &str) -> io::Error {
        let details = format!(
            "{}\n{}",
            log_tail(&self.console_log(), 20),
            self.log_tail(20)
        );
        failure(
            &format!("private rabbitmq node {} {what}", self.node),
            &details,
        )
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some(server) = self.server.take()
            && let Err(error) = server.kill_blocking()
        {
            warn!(node = %self.node, %error, "could not kill a private rabbitmq");
        }
        // The scratch folder goes with `self.dir`, after this.
    }
}

/// The release's own `sbin` folder, not the `/usr/sbin` wrapper.
fn sbin_dir() -> io::Result<PathBuf> {
    let debian = PathBuf::from("/usr/lib/rabbitmq/bin");
    if debian.join("rabbitmq-server").is_file() {
        return Ok(debian);
    }
    let releases = Path::new("/usr/lib/rabbitmq/lib");
    fs::read_dir(releases)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let sbin = entry.ok()?.path().join("sbin");
            sbin.join("rabbitmq-server").is_file().then_some(sbin)
        })
        .max()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no rabbitmq-server under /usr/lib/rabbitmq",
            )
        })
}

/// A fresh Erlang cookie: 32 random capital letters.
pub(crate) fn new_cookie() -> String {
    (0..32)
        .map(|_| char::from(b'A' + rand::random_range(0..26u8)))
        .collect()
}

/// The configuration, the empty plugin list and environment file, and the
/// Erlang cookie in a file only its owner may read, as Erlang demands.
fn write_files(dir: &Path, cookie: &str) -> io::Result<()> {
    fs::write(dir.join("rabbitmq.conf"), CONFIG)?;
    fs::write(dir.join("enabled_plugins"), "[].\n")?;
    fs::write(dir.join("rabbitmq-env.conf"), "")?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(dir.join(".erlang.cookie"))?
        .write_all(cookie.as_bytes())
}
