//! `--json` on every command that prints: one JSON value on stdout (JSON
//! Lines where a command streams), for the lists and shows, the checks, the
//! exports, the broker's parked messages and a rebuild.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::Customer;
use crate::cli::{BAD_INPUT, Cli, DONE, text};

/// Every list and show of what the movements left behind.
pub async fn lists_and_shows(cli: &Cli, customer: &Customer, transaction_id: &str) {
    let (customer_id, from) = (customer.id.as_str(), customer.from.as_str());
    // --json on every list and show: one JSON value on stdout.
    let saga_list = cli.json(&["saga", "list", "--json"]).await;
    let sagas = saga_list["sagas"].as_array().expect("sagas");
    assert!(sagas.len() >= 3, "{saga_list}");
    let saga_id = text(&sagas[0], "sagaId");
    let saga = cli.json(&["saga", "show", &saga_id, "--json"]).await;
    assert_eq!(saga["sagaId"], saga_id.as_str(), "{saga}");
    let transactions = cli
        .json(&["transaction", "list", "--account-id", from, "--json"])
        .await;
    assert!(
        transactions["transactions"].as_array().map(Vec::len) >= Some(3),
        "{transactions}"
    );
    let shown = cli
        .json(&["transaction", "show", transaction_id, "--json"])
        .await;
    assert_eq!(shown["transactionId"], transaction_id, "{shown}");
    let watched = cli
        .run(&["transaction", "watch", transaction_id, "--json"])
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
    let balance = cli.json(&["account", "balance", from, "--json"]).await;
    assert_eq!(balance["ledger"]["amount"], "70.00", "{balance}");
    for args in [
        vec!["customer", "list", "--json"],
        vec!["customer", "show", customer_id, "--json"],
        vec!["customer", "history", customer_id, "--json"],
        vec!["account", "list", "--customer-id", customer_id, "--json"],
        vec!["account", "show", from, "--json"],
        vec!["account", "entries", from, "--json"],
        vec!["fraud", "reviews", "--json"],
        vec!["fraud", "alerts", "--json"],
        vec!["fraud", "watchlist", "list", "--json"],
        vec!["fraud", "rules", "show", "--json"],
        vec!["fraud", "decision", transaction_id, "--json"],
        vec!["reporting", "status", "--json"],
        vec!["reporting", "statement", from, "--json"],
        vec!["reporting", "daily-totals", "--json"],
        vec!["reporting", "reconciliations", "--json"],
        vec!["export", "list", "--json"],
        vec!["export", "keys", "--json"],
    ] {
        let value = cli.json(&args).await;
        assert!(value.is_object(), "{args:?}: {value}");
    }
    let entries = cli.json(&["account", "entries", from, "--json"]).await;
    assert!(
        entries["entries"].as_array().map(Vec::len) >= Some(2),
        "{entries}"
    );
}

/// The checks: nothing wrong is exit 0 with a JSON report.
pub async fn checks(cli: &Cli, database_url: &str) {
    let reconciled = cli.json(&["reconcile", "--json"]).await;
    assert_eq!(reconciled["clean"], true, "{reconciled}");
    let audited = cli
        .json(&["audit", "--database-url", database_url, "--json"])
        .await;
    assert!(audited.is_object(), "{audited}");
}

/// The export commands that print: create, show, download (into
/// `scratch`), and a verification with `public_key`.
pub async fn exports(cli: &Cli, scratch: &Path, public_key: &str) {
    // A period is exported once it ended at least 5 s ago: wait until the
    // movements above fall in one.
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
            public_key,
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
}

/// The broker's parked messages: JSON Lines from list (none here), one
/// object from replay.
pub async fn dead_letters(cli: &Cli, amqp_url: &str, namespace: &str) {
    let broker = ["--amqp-url", amqp_url, "--namespace", namespace];
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
}

/// A rebuild prints its answer and draws no progress on a stderr that is
/// not a terminal.
pub async fn rebuild(cli: &Cli) {
    let rebuild = cli.run(&["reporting", "rebuild", "--json"]).await;
    assert_eq!(rebuild.code(), Some(DONE), "{}", rebuild.explain());
    assert!(rebuild.stderr.is_empty(), "{}", rebuild.explain());
    assert!(rebuild.json().is_object(), "{}", rebuild.explain());
}
