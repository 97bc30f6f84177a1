//! Process groups, read from `/proc` and signalled with `kill(1)`.
//!
//! A server started in a process group of its own can be killed as a whole,
//! whatever its start script spawned or exec'd, without knowing its pids.
//! `kill(1)` stands in for `kill(2)` because this workspace forbids `unsafe`.

use std::fs;
use std::io;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command as TokioCommand};

use super::PATIENCE;

/// How long a start script gets to reap what it started once that is killed.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// A child process leading a process group of its own, and everything it
/// starts that stays in that group.
pub(crate) struct ProcessGroup {
    leader: Child,
    pgid: u32,
}

impl ProcessGroup {
    /// Spawns `command` as the leader of a new process group.
    pub(crate) fn spawn(command: &mut TokioCommand) -> io::Result<ProcessGroup> {
        let leader = command.process_group(0).spawn()?;
        let pgid = leader
            .id()
            .ok_or_else(|| io::Error::other("the process exited at once"))?;
        Ok(ProcessGroup { leader, pgid })
    }

    /// Whether the leader is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.leader.try_wait(), Ok(None))
    }

    /// Waits until the leader exits.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.leader.wait().await
    }

    /// [`ProcessGroup::kill_blocking`] on a blocking thread.
    pub(crate) async fn kill(self) -> io::Result<()> {
        tokio::task::spawn_blocking(move || self.kill_blocking())
            .await
            .map_err(io::Error::other)?
    }

    /// Kills every process of the group with SIGKILL and waits until they
    /// are gone: first the members, while the leader, a script waiting for
    /// them, can still reap them; then whatever is left, leader included.
    pub(crate) fn kill_blocking(mut self) -> io::Result<()> {
        let mut leader_done = || !matches!(self.leader.try_wait(), Ok(None));
        let others: Vec<u32> = group_members(self.pgid)
            .into_iter()
            .filter(|pid| *pid != self.pgid)
            .collect();
        kill(&others)?;
        let reaped = !others.is_empty() && wait_until(REAP_GRACE, &mut leader_done);
        if !reaped && !leader_done() {
            kill_group(self.pgid)?;
            wait_until(PATIENCE, &mut leader_done);
        }
        if !group_members(self.pgid).is_empty() {
            kill_group(self.pgid)?;
        }
        if wait_until(PATIENCE, || group_members(self.pgid).is_empty()) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "processes of group {} outlived SIGKILL",
                self.pgid
            )))
        }
    }
}

/// The pids of the live processes in process group `pgid`. Zombies are left
/// out: they hold nothing but their pid, and their parent reaps them.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat(*pid).is_some_and(|(state, group)| group == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces and parentheses itself:
    // the fields that follow start after the last `)`.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// Sends SIGKILL to each of `pids`; a process already gone is no error.
fn kill(pids: &[u32]) -> io::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let targets: Vec<String> = pids.iter().map(u32::to_string).collect();
    send_kill(&targets)
}

/// Sends SIGKILL to every process in group `pgid`.
fn kill_group(pgid: u32) -> io::Result<()> {
    send_kill(&[format!("-{pgid}")])
}

fn send_kill(targets: &[String]) -> io::Result<()> {
    // A failed status only means some target was gone already: ignore it.
    Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(targets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(())
}

/// Blocks until `done` holds or `limit` has passed; says whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(super::POLL);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[tokio::test]
    async fn killing_a_group_kills_what_its_script_started_and_leaves_no_zombie() {
        let mut script = TokioCommand::new("sh");
        script.args(["-c", "sleep 300 & sleep 300 & wait"]);
        let group = ProcessGroup::spawn(&mut script).unwrap();
        let pgid = group.pgid;
        assert!(wait_until(Duration::from_secs(10), || {
            group_members(pgid).len() == 3
        }));
        let sleeps: Vec<u32> = group_members(pgid)
            .into_iter()
            .filter(|pid| *pid != pgid)
            .collect();

        group.kill().await.unwrap();

        assert!(group_members(pgid).is_empty());
        // The script reaped its children before it died: no zombie is left
        // for init to collect.
        for pid in sleeps {
            assert!(stat(pid).is_none(), "process {pid} is still there");
        }
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_parsed() {
        let dir = std::env::temp_dir().join(format!("corebank-odd-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("odd) (x");
        let _ = fs::remove_file(&odd);
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let mut child = Command::new(&odd)
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let seen = wait_until(Duration::from_secs(10), || {
            stat(pgid).is_some_and(|(_, group)| group == pgid)
        });
        kill(&[pgid]).unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(seen);
    }
}
