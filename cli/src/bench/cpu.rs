//! The CPU a run cost, by process: read from Linux's `/proc` before and
//! after the transfers, when the bench runs on the machine it measures (as
//! `scripts/bench` does). Elsewhere (another OS, or a remote PostgreSQL or
//! broker) the figures are absent or cover only what runs here.
//!
//! A process counts toward PostgreSQL (`postgres`), RabbitMQ (the Erlang VM,
//! `beam.smp`), corebank (a process of the bench's own executable, or named
//! `corebank`; the bench itself apart) or nothing; `other` is the rest of the
//! machine's busy time (the kernel's interrupts, other programs, and the
//! backends that ended during the run). Times are in `USER_HZ` ticks, which
//! Linux fixes at 100 a second in `/proc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Milliseconds a `/proc` tick stands for.
const MS_PER_TICK: f64 = 10.0;

/// The groups of processes, in the order they are shown.
const GROUPS: [&str; 4] = ["postgres", "rabbitmq", "corebank", "bench"];

/// CPU ticks used so far: the machine's busy and total, and each group's.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    busy: u64,
    total: u64,
    groups: BTreeMap<&'static str, u64>,
}

/// What the run cost between two samples.
#[derive(Debug, Serialize)]
pub(super) struct Cost {
    /// The machine's busy share of its CPUs, in percent.
    pub(super) busy_pct: f64,
    /// CPU milliseconds per saga, by group (and `other`).
    pub(super) ms_per_saga: BTreeMap<String, f64>,
    /// All of it: the machine's busy CPU milliseconds per saga.
    pub(super) total_ms_per_saga: f64,
}

/// The CPU used so far, or `None` where `/proc` cannot be read.
pub(super) fn sample() -> Option<Sample> {
    let (busy, total) = machine()?;
    let own_pid = std::process::id();
    let own_exe = std::env::current_exe().ok();
    let mut groups: BTreeMap<&'static str, u64> = GROUPS.iter().map(|group| (*group, 0)).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((name, ticks)) = process(&entry.path()) else {
            continue;
        };
        let group = if pid == own_pid {
            Some("bench")
        } else {
            group_of(
                &name,
                std::fs::read_link(entry.path().join("exe")).ok(),
                own_exe.as_ref(),
            )
        };
        if let Some(group) = group {
            *groups.entry(group).or_default() += ticks;
        }
    }
    Some(Sample {
        busy,
        total,
        groups,
    })
}

/// The cost of the run between `before` and `after`, over `sagas` sagas.
pub(super) fn cost(before: &Sample, after: &Sample, sagas: u64) -> Option<Cost> {
    let total = after.total.checked_sub(before.total)?;
    if total == 0 || sagas == 0 {
        return None;
    }
    let busy = after.busy.saturating_sub(before.busy);
    let per_saga = |ticks: u64| ticks as f64 * MS_PER_TICK / sagas as f64;
    let mut ms_per_saga = BTreeMap::new();
    let mut counted = 0;
    for group in GROUPS {
        let used = after.groups[group].saturating_sub(before.groups[group]);
        counted += used;
        ms_per_saga.insert(group.to_owned(), per_saga(used));
    }
    ms_per_saga.insert("other".to_owned(), per_saga(busy.saturating_sub(counted)));
    Some(Cost {
        busy_pct: 100.0 * busy as f64 / total as f64,
        ms_per_saga,
        total_ms_per_saga: per_saga(busy),
    })
}

/// Which group a process named `name` running `exe` belongs to.
fn group_of(name: &str, exe: Option<PathBuf>, own_exe: Option<&PathBuf>) -> Option<&'static str> {
    match name {
        "postgres" => Some("postgres"),
        "beam.smp" => Some("rabbitmq"),
        "corebank" => Some("corebank"),
        _ if exe.is_some() && exe.as_ref() == own_exe => Some("corebank"),
        _ => None,
    }
}

/// The machine's busy and total ticks over all CPUs (`/proc/stat`).
fn machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    if ticks.len() < 8 {
        return None;
    }
    let total: u64 = ticks[..8].iter().sum();
    let idle = ticks[3] + ticks[4];
    Some((total - idle, total))
}

/// A process's name and its user plus system ticks (`/proc/<pid>/stat`).
fn process(dir: &Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(busy: u64, total: u64, groups: [u64; 4]) -> Sample {
        Sample {
            busy,
            total,
            groups: GROUPS.iter().copied().zip(groups).collect(),
        }
    }

    #[test]
    fn the_cost_divides_each_groups_ticks_by_the_sagas_and_leaves_the_rest_to_other() {
        let before = sample(1_000, 10_000, [100, 50, 80, 5]);
        let after = sample(1_600, 11_000, [400, 150, 230, 15]);
        let cost = cost(&before, &after, 100).unwrap();
        assert_eq!(cost.busy_pct, 60.0);
        assert_eq!(cost.total_ms_per_saga, 60.0);
        assert_eq!(cost.ms_per_saga["postgres"], 30.0);
        assert_eq!(cost.ms_per_saga["rabbitmq"], 10.0);
        assert_eq!(cost.ms_per_saga["corebank"], 15.0);
        assert_eq!(cost.ms_per_saga["bench"], 1.0);
        assert_eq!(cost.ms_per_saga["other"], 4.0);
    }

    #[test]
    fn no_sagas_or_no_time_has_no_cost() {
        let before = sample(1_000, 10_000, [0; 4]);
        assert!(cost(&before, &before, 10).is_none());
        assert!(cost(&before, &sample(1_100, 10_500, [0; 4]), 0).is_none());
    }

    #[test]
    fn processes_are_grouped_by_name_or_by_the_bench_executable() {
        let own = PathBuf::from("/opt/corebank/bin/cb-build");
        assert_eq!(group_of("postgres", None, Some(&own)), Some("postgres"));
        assert_eq!(group_of("beam.smp", None, Some(&own)), Some("rabbitmq"));
        assert_eq!(group_of("corebank", None, None), Some("corebank"));
        assert_eq!(
            group_of("cb-build", Some(own.clone()), Some(&own)),
            Some("corebank")
        );
        assert_eq!(
            group_of("sshd", Some(PathBuf::from("/usr/sbin/sshd")), Some(&own)),
            None
        );
        assert_eq!(group_of("tokio-rt-worker", None, None), None);
    }

    #[test]
    fn a_process_line_with_parentheses_in_its_name_is_read() {
        let dir = std::env::temp_dir().join(format!("cpu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            "42 (odd (name)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 0 0",
        )
        .unwrap();
        let read = process(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read, Some(("odd (name)".to_owned(), 325)));
    }

    #[test]
    fn this_machine_is_sampled_where_proc_exists() {
        if !Path::new("/proc/stat").exists() {
            return;
        }
        let first = super::sample().expect("a sample on Linux");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let second = super::sample().unwrap();
        assert!(second.total > first.total);
        assert!(second.groups["bench"] >= first.groups["bench"]);
    }
}
