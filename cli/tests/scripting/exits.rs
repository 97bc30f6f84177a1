//! Exit codes a script branches on: usage errors, a server nobody listens
//! on, what a movement ended as, a negative amount and a refusal reaching
//! the server's validation, and a reader that goes away.

use crate::Customer;
use crate::cli::{
    BAD_INPUT, Cli, DONE, MOVEMENT_FAILED, MOVEMENT_UNFINISHED, UNAVAILABLE, assert_quiet_exit,
    text,
};
use crate::common::free_port;

/// An unknown flag is a usage error naming it; a server nobody listens on
/// is "unavailable", for a list and a movement alike.
pub async fn usage_errors_and_an_unreachable_server(offline: &Cli) {
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
}

/// What a movement ended as, told by its exit code; the id of the
/// completed transfer.
pub async fn movements(cli: &Cli, customer: &Customer) -> String {
    // A completed transfer exits 0; one the ledger refuses ends FAILED and
    // exits 4, its answer still on stdout.
    let completed = cli.json(&customer.transfer("30.00")).await;
    assert_eq!(
        completed["status"], "TRANSACTION_STATUS_COMPLETED",
        "{completed}"
    );
    let transaction_id = text(&completed, "transactionId");
    let failed = cli.run(&customer.transfer("5000.00")).await;
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
            &customer.to,
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
    transaction_id
}

/// What the server refuses is bad input, as a usage error is.
pub async fn negative_amounts_and_refusals(cli: &Cli, customer: &Customer) {
    let (from, to) = (customer.from.as_str(), customer.to.as_str());
    // A negative amount reaches the server, which names the field.
    for movement in [
        vec!["deposit", "--account-id", from],
        vec!["withdraw", "--account-id", from],
        vec!["transfer", "--from", from, "--to", to],
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
        .run(&["account", "close", from, "--reason", "test"])
        .await;
    assert_eq!(not_empty.code(), Some(BAD_INPUT), "{}", not_empty.explain());
}

/// A reader that goes away: no panic, and the exit code is the outcome's.
pub async fn closed_pipes(cli: &Cli, customer: &Customer, transaction_id: &str) {
    let from = customer.from.as_str();
    for args in [
        vec!["saga", "list"],
        vec!["transaction", "list", "--account-id", from],
        vec!["account", "entries", from],
        vec!["transaction", "watch", transaction_id, "--json"],
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
    let failed_into_closed_pipe = cli
        .run_into_closed_pipe(&customer.transfer("6000.00"))
        .await;
    assert_quiet_exit(
        &failed_into_closed_pipe,
        MOVEMENT_FAILED,
        "a FAILED transfer into a closed pipe",
    );
    let (first_line, ran) = cli
        .run_into_head(&["transaction", "list", "--account-id", from])
        .await;
    assert!(
        first_line.starts_with("transactions ("),
        "the first line arrives: {first_line:?}"
    );
    assert_quiet_exit(&ran, DONE, "transaction list | head -1");
}
