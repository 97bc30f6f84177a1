//! The `corebank` CLI as a script sees it, against one real corebank
//! process: exit codes per class of outcome (README's `## CLI` table),
//! negative amounts reaching the server's validation, a closed stdout
//! ending a command quietly, and `--json` on every command that prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_tests::harness::{TestDb, amqp_url, lease_namespace};
use serde_json::Value;
use tokio::process::Command;

mod common;
use common::{connect, database_url, free_port, free_ports, port, spawn_corebank_with};

const DONE: i32 = 0;
const BAD_INPUT: i32 = 2;
const UNAVAILABLE: i32 = 3;
const MOVEMENT_FAILED: i32 = 4;
const MOVEMENT_UNFINISHED: i32 = 5;

/// What one run of the binary left behind.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout as one JSON value, or the test fails saying what it was.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn explain(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// How every command finds the running corebank and signs its calls.
struct Cli {
    env: Vec<(String, String)>,
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

    async fn run(&self, args: &[&str]) -> Ran {
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
    async fn json(&self, args: &[&str]) -> Value {
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
    async fn run_into_closed_pipe(&self, args: &[&str]) -> Ran {
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
    async fn run_into_head(&self, args: &[&str]) -> (String, Ran) {
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

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

fn assert_quiet_exit(ran: &Ran, code: i32, what: &str) {
    assert!(
        !ran.stderr.contains("panicked"),
        "{what} panicked on a closed stdout: {}",
        ran.explain()
    );
    assert_eq!(ran.code(), Some(code), "{what}: {}", ran.explain());
}

/// Every statement of README's exit-code table that a script relies on, one
/// corebank shared by all of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_script_can_trust_the_clis_exit_codes_pipes_and_json() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let namespace = lease.namespace();
    let ports = free_ports();
    let scratch = std::env::temp_dir().join(format!("{}-scripting", db.name));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let key = scratch.join("signing.key.pem");
    corebank_platform::auth::DevKey::load_or_create_at(&key).expect("a signing key");

    // Usage errors and an unreachable server need no corebank: they run
    // while it starts.
    let mut env: Vec<(String, String)> = vec![(
        "COREBANK_DEV_SIGNING_KEY".to_owned(),
        key.display().to_string(),
    )];
    let offline = Cli { env: env.clone() };

    let keygen = offline
        .json(&[
            "keygen",
            "--out-dir",
            &scratch.display().to_string(),
            "--name",
            "export",
            "--json",
        ])
        .await;
    let export_key = text(&keygen, "private_key");
    let export_public_key = text(&keygen, "public_key");
    assert!(Path::new(&export_public_key).exists(), "{keygen}");
    let again = offline
        .run(&[
            "keygen",
            "--out-dir",
            &scratch.display().to_string(),
            "--name",
            "export",
        ])
        .await;
    assert_eq!(
        again.code(),
        Some(BAD_INPUT),
        "a key that exists is refused as bad input: {}",
        again.explain()
    );

    let unknown_flag = offline.run(&["saga", "list", "--no-such-flag"]).await;
    assert_eq!(unknown_flag.code(), Some(2), "{}", unknown_flag.explain());
    assert!(
        unknown_flag.stderr.contains("--no-such-flag"),
        "{}",
        unknown_flag.explain()
    );

    let nobody = format!("http://{}", free_port());
    let unreachable = offline
        .run(&["saga", "list", "--orchestrator-endpoint", &nobody])
        .await;
    assert_eq!(
        unreachable.code(),
        Some(UNAVAILABLE),
        "{}",
        unreachable.explain()
    );
    assert!(
        unreachable.stderr.contains("Unavailable"),
        "{}",
        unreachable.explain()
    );
    let unreachable_move = offline
        .run(&[
            "deposit",
            "--account-id",
            "0190aaaa-0000-7000-8000-000000000000",
            "--amount",
            "1",
            "--currency",
            "USD",
            "--transaction-endpoint",
            &nobody,
        ])
        .await;
    assert_eq!(
        unreachable_move.code(),
        Some(UNAVAILABLE),
        "{}",
        unreachable_move.explain()
    );

    let token = offline
        .json(&["token", "issue", "--sub", "partner-1", "--json"])
        .await;
    assert_eq!(text(&token, "token").split('.').count(), 3, "{token}");

    let _corebank = spawn_corebank_with(
        &database_url(&db.name),
        namespace.as_str(),
        &ports,
        &key,
        &[("COREBANK_EXPORT_SIGNING_KEY", export_key.as_str())],
    );
    for service in SERVICES {
        connect(port(&ports, service.name())).await;
    }
    for service in [
        "customer",
        "account",
        "transaction",
        "orchestrator",
        "fraud",
        "reporting",
    ] {
        env.push((
            format!("COREBANK_{}_ENDPOINT", service.to_uppercase()),
            format!("http://{}", port(&ports, service)),
        ));
    }
    let cli = Cli { env };

    // A customer with two accounts, one funded.
    let customer = cli
        .json(&[
            "customer",
            "create",
            "--legal-name",
            "Grace Hopper",
            "--email",
            "grace@example.com",
            "--date-of-birth",
            "1986-12-09",
            "--country",
            "US",
            "--national-id",
            "123-45-6789",
            "--json",
        ])
        .await;
    let customer_id = text(&customer, "customerId");
    cli.json(&[
        "customer",
        "verify",
        &customer_id,
        "--reason",
        "passport checked",
        "--json",
    ])
    .await;
    let open = [
        "account",
        "open",
        "--customer-id",
        &customer_id,
        "--currency",
        "USD",
        "--json",
    ];
    let from = text(&cli.json(&open).await, "accountId");
    let to = text(&cli.json(&open).await, "accountId");
    let deposit = cli
        .json(&[
            "deposit",
            "--account-id",
            &from,
            "--amount",
            "100.00",
            "--currency",
            "USD",
            "--json",
        ])
        .await;
    assert_eq!(
        deposit["status"], "TRANSACTION_STATUS_COMPLETED",
        "{deposit}"
    );

    // A completed transfer exits 0; one the ledger refuses ends FAILED and
    // exits 4, its answer still on stdout.
    let transfer = |amount: &'static str| {
        [
            "transfer",
            "--from",
            from.as_str(),
            "--to",
            to.as_str(),
            "--amount",
            amount,
            "--currency",
            "USD",
            "--json",
        ]
    };
    let completed = cli.json(&transfer("30.00")).await;
    assert_eq!(
        completed["status"], "TRANSACTION_STATUS_COMPLETED",
        "{completed}"
    );
    let transaction_id = text(&completed, "transactionId");
    let failed = cli.run(&transfer("5000.00")).await;
    assert_eq!(
        failed.code(),
        Some(MOVEMENT_FAILED),
        "an overdrawing transfer: {}",
        failed.explain()
    );
    let failed_json = failed.json();
    assert_eq!(
        failed_json["status"], "TRANSACTION_STATUS_FAILED",
        "{failed_json}"
    );
    assert!(
        failed.stderr.contains("FAILED"),
        "stderr says why: {}",
        failed.explain()
    );

    // Not waiting for the outcome is not "done".
    let unfinished = cli
        .run(&[
            "deposit",
            "--account-id",
            &to,
            "--amount",
            "1.00",
            "--currency",
            "USD",
            "--wait",
            "0",
        ])
        .await;
    assert_eq!(
        unfinished.code(),
        Some(MOVEMENT_UNFINISHED),
        "{}",
        unfinished.explain()
    );
    assert!(
        unfinished.stderr.contains("transaction watch"),
        "{}",
        unfinished.explain()
    );

    // A negative amount reaches the server, which names the field.
    for movement in [
        vec!["deposit", "--account-id", &from],
        vec!["withdraw", "--account-id", &from],
        vec!["transfer", "--from", &from, "--to", &to],
    ] {
        let mut args = movement.clone();
        args.extend(["--amount", "-5", "--currency", "USD"]);
        let refused = cli.run(&args).await;
        assert_eq!(
            refused.code(),
            Some(BAD_INPUT),
            "{args:?}: {}",
            refused.explain()
        );
        assert!(
            refused.stderr.contains("InvalidArgument") && refused.stderr.contains("field amount"),
            "{args:?} names the field: {}",
            refused.explain()
        );
        assert!(
            !refused.stderr.contains("unexpected argument"),
            "{}",
            refused.explain()
        );
    }
    // So does a server-side refusal of a known id in the wrong state
    // (closing an account that holds money).
    let not_empty = cli
        .run(&["account", "close", &from, "--reason", "test"])
        .await;
    assert_eq!(not_empty.code(), Some(BAD_INPUT), "{}", not_empty.explain());

    // A reader that goes away: no panic, and the exit code is the outcome's.
    for args in [
        vec!["saga", "list"],
        vec!["transaction", "list", "--account-id", &from],
        vec!["account", "entries", &from],
        vec!["transaction", "watch", &transaction_id, "--json"],
        vec!["customer", "list", "--json"],
    ] {
        let ran = cli.run_into_closed_pipe(&args).await;
        assert_quiet_exit(&ran, DONE, &format!("{args:?}"));
        assert!(
            ran.stderr.trim().is_empty(),
            "{args:?} is quiet: {}",
            ran.explain()
        );
    }
    let failed_into_closed_pipe = cli.run_into_closed_pipe(&transfer("6000.00")).await;
    assert_quiet_exit(
        &failed_into_closed_pipe,
        MOVEMENT_FAILED,
        "a FAILED transfer into a closed pipe",
    );
    let (first_line, ran) = cli
        .run_into_head(&["transaction", "list", "--account-id", &from])
        .await;
    assert!(
        first_line.starts_with("transactions ("),
        "the first line arrives: {first_line:?}"
    );
    assert_quiet_exit(&ran, DONE, "transaction list | head -1");

    // --json on every list and show: one JSON value on stdout.
    let saga_list = cli.json(&["saga", "list", "--json"]).await;
    let sagas = saga_list["sagas"].as_array().expect("sagas");
    assert!(sagas.len() >= 3, "{saga_list}");
    let saga_id = text(&sagas[0], "sagaId");
    let saga = cli.json(&["saga", "show", &saga_id, "--json"]).await;
    assert_eq!(saga["sagaId"], saga_id.as_str(), "{saga}");
    let transactions = cli
        .json(&["transaction", "list", "--account-id", &from, "--json"])
        .await;
    assert!(
        transactions["transactions"].as_array().map(Vec::len) >= Some(3),
        "{transactions}"
    );
    let shown = cli
        .json(&["transaction", "show", &transaction_id, "--json"])
        .await;
    assert_eq!(shown["transactionId"], transaction_id.as_str(), "{shown}");
    let watched = cli
        .run(&["transaction", "watch", &transaction_id, "--json"])
        .await;
    assert_eq!(watched.code(), Some(DONE), "{}", watched.explain());
    let updates: Vec<Value> = watched
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each watch line is JSON"))
        .collect();
    assert_eq!(
        updates.last().map(|update| update["status"].clone()),
        Some(Value::from("TRANSACTION_STATUS_COMPLETED")),
        "{}",
        watched.stdout
    );
    let balance = cli.json(&["account", "balance", &from, "--json"]).await;
    assert_eq!(balance["ledger"]["amount"], "70.00", "{balance}");
    for args in [
        vec!["customer", "list", "--json"],
        vec!["customer", "show", &customer_id, "--json"],
        vec!["customer", "history", &customer_id, "--json"],
        vec!["account", "list", "--customer-id", &customer_id, "--json"],
        vec!["account", "show", &from, "--json"],
        vec!["account", "entries", &from, "--json"],
        vec!["fraud", "reviews", "--json"],
        vec!["fraud", "alerts", "--json"],
        vec!["fraud", "watchlist", "list", "--json"],
        vec!["fraud", "rules", "show", "--json"],
        vec!["fraud", "decision", &transaction_id, "--json"],
        vec!["reporting", "status", "--json"],
        vec!["reporting", "statement", &from, "--json"],
        vec!["reporting", "daily-totals", "--json"],
        vec!["reporting", "reconciliations", "--json"],
        vec!["export", "list", "--json"],
        vec!["export", "keys", "--json"],
    ] {
        let value = cli.json(&args).await;
        assert!(value.is_object(), "{args:?}: {value}");
    }
    let entries = cli.json(&["account", "entries", &from, "--json"]).await;
    assert!(
        entries["entries"].as_array().map(Vec::len) >= Some(2),
        "{entries}"
    );

    // The checks: nothing wrong is exit 0 with a JSON report.
    let reconciled = cli.json(&["reconcile", "--json"]).await;
    assert_eq!(reconciled["clean"], true, "{reconciled}");
    let audited = cli
        .json(&["audit", "--database-url", &database_url(&db.name), "--json"])
        .await;
    assert!(audited.is_object(), "{audited}");

    // The export commands that print: create, show, download. A period is
    // exported once it ended at least 5 s ago: wait until the movements
    // above fall in one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = chrono::Utc::now() - chrono::Duration::seconds(5);
    let export = cli
        .json(&[
            "export",
            "create",
            "--from",
            "2020-01-01",
            "--to",
            &now.to_rfc3339(),
            "--json",
        ])
        .await;
    let export_id = text(&export, "exportId");
    cli.json(&["export", "show", &export_id, "--json"]).await;
    let download_dir = scratch.join("download");
    let download = cli
        .run(&[
            "export",
            "download",
            &export_id,
            "--out",
            &download_dir.display().to_string(),
            "--json",
        ])
        .await;
    assert_eq!(download.code(), Some(DONE), "{}", download.explain());
    assert!(
        download.stderr.is_empty(),
        "no progress drawn when stderr is not a terminal: {}",
        download.explain()
    );
    let downloaded = download.json();
    assert_eq!(
        downloaded["files"].as_array().map(Vec::len),
        Some(4),
        "{downloaded}"
    );
    let verified = cli
        .json(&[
            "export",
            "verify",
            &download_dir.display().to_string(),
            "--public-key",
            &export_public_key,
            "--json",
        ])
        .await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        verified["row_count"].as_u64() > Some(0),
        "the movements are in the export: {verified}"
    );
    let twice = cli
        .run(&[
            "export",
            "download",
            &export_id,
            "--out",
            &download_dir.display().to_string(),
        ])
        .await;
    assert_eq!(
        twice.code(),
        Some(BAD_INPUT),
        "files that exist are not overwritten: {}",
        twice.explain()
    );

    // The broker's parked messages: JSON Lines from list (none here), one
    // object from replay.
    let amqp = amqp_url();
    let broker = [
        "--amqp-url",
        amqp.as_str(),
        "--namespace",
        namespace.as_str(),
    ];
    let mut list = vec!["dlq"];
    list.extend(broker);
    list.extend(["list", "account.commands", "--json"]);
    let parked = cli.run(&list).await;
    assert_eq!(parked.code(), Some(DONE), "{}", parked.explain());
    for line in parked.stdout.lines() {
        serde_json::from_str::<Value>(line).expect("each dlq line is JSON");
    }
    let mut replay = vec!["dlq"];
    replay.extend(broker);
    replay.extend(["replay", "account.commands", "--json"]);
    let replayed = cli.json(&replay).await;
    assert_eq!(replayed["replayed"], 0, "{replayed}");

    // Last, as it throws the read models away: a rebuild prints its answer
    // and draws no progress on a stderr that is not a terminal.
    let rebuild = cli.run(&["reporting", "rebuild", "--json"]).await;
    assert_eq!(rebuild.code(), Some(DONE), "{}", rebuild.explain());
    assert!(rebuild.stderr.is_empty(), "{}", rebuild.explain());
    assert!(rebuild.json().is_object(), "{}", rebuild.explain());

    drop(_corebank);
    let _ = std::fs::remove_dir_all(&scratch);
}
