//! Running the `corebank` binary as a script does: its exit code, stdout
//! and stderr captured, its stdout a pipe whose reader may go away, and the
//! exit codes of README's `## CLI` table a script tells outcomes apart by.

use std::io::{BufRead, BufReader};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

pub const DONE: i32 = 0;
pub const BAD_INPUT: i32 = 2;
pub const UNAVAILABLE: i32 = 3;
pub const MOVEMENT_FAILED: i32 = 4;
pub const MOVEMENT_UNFINISHED: i32 = 5;

/// What one run of the binary left behind.
pub struct Ran {
    status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout as one JSON value, or the test fails saying what it was.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn explain(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// How every command finds the running corebank and signs its calls.
pub struct Cli {
    pub env: Vec<(String, String)>,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corebank"));
        command
            .args(args)
            .env_remove("COREBANK_TOKEN")
            .env_remove("COREBANK_IDEMPOTENCY_KEY")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Ran {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("corebank {args:?} ended within 60 s"))
            .expect("corebank runs");
        Ran {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed and print one JSON value.
    pub async fn json(&self, args: &[&str]) -> Value {
        let ran = self.run(args).await;
        assert_eq!(
            ran.code(),
            Some(DONE),
            "corebank {args:?}: {}",
            ran.explain()
        );
        ran.json()
    }

    /// Runs `args` with stdout a pipe whose reader closed before the command
    /// started: its first write meets a broken pipe.
    pub async fn run_into_closed_pipe(&self, args: &[&str]) -> Ran {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        // Spawned rather than `output()`, which would pipe stdout itself.
        let child = self
            .command(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("corebank runs");
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("corebank {args:?} ended within 60 s"))
            .expect("corebank runs");
        Ran {
            status: output.status,
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `args`, reads the first line of its stdout and closes the pipe,
    /// as `| head -1` does.
    pub async fn run_into_head(&self, args: &[&str]) -> (String, Ran) {
        let mut command = self.command(args);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("corebank runs");
        let stdout = child
            .stdout
            .take()
            .expect("stdout is piped")
            .into_owned_fd()
            .expect("stdout as a file descriptor");
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(std::fs::File::from(stdout))
                .read_line(&mut line)
                .expect("read the first line");
            line
        })
        .await
        .expect("the reader ends");
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("corebank {args:?} ended within 60 s"))
            .expect("corebank ends");
        let ran = Ran {
            status: output.status,
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        (first, ran)
    }
}

pub fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

pub fn assert_quiet_exit(ran: &Ran, code: i32, what: &str) {
    assert!(
        !ran.stderr.contains("panicked"),
        "{what} panicked on a closed stdout: {}",
        ran.explain()
    );
    assert_eq!(ran.code(), Some(code), "{what}: {}", ran.explain());
}
