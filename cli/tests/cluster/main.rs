//! The production shape, on one machine: a three-node RabbitMQ cluster
//! (private nodes, every quorum queue with a member on each), a fresh
//! database on the shared PostgreSQL, and every service as processes of its
//! own, two replicas each (`corebank serve`), all given the cluster as a
//! URL list. Transfers run through the REST gateway (as a partner) and over
//! gRPC (as an operator), closed-loop, each sender spread over both replicas
//! of its entry point. A third of the way in, one broker node (the leader of
//! every queue) and one replica of every service are killed with SIGKILL at
//! once; the load goes on on the survivors. Then the load drains and every
//! invariant is checked: each accepted transfer stored once, every
//! transaction ended, the ledger balanced with no hold left, one journal per
//! completed transfer, every saga terminal, money conserved, reporting
//! reconciled with the ledger, nothing parked; and every survivor still runs.
//!
//! It prints completed sagas a second before, during and after the losses
//! (all, and by path), how long until the first completion after them and
//! until throughput was back at 80 % of before, and the transfers sent,
//! completed and failed. `CLUSTER_SECONDS` sets how long the load runs
//! (default 45, the suite's short form; `scripts/cluster` runs 300).
//! See `deployment.rs` for how callers reach two replicas.

#[path = "../common/mod.rs"]
mod common;
mod deployment;
mod senders;
mod throughput;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::{Instant, sleep_until};

use common::workload::{
    Clients, assert_invariants, assert_nothing_parked, open_funded_accounts, operator,
    until_every_transaction_ends,
};
use deployment::{Deployment, NAMESPACE, NODE_KILLED, NODES, REPLICA_KILLED, REPLICAS};
use senders::{Rest, Tally};
use throughput::{
    RECOVERED_SHARE, RECOVERY_WINDOW, Sampler, first_completion_after, rate, recovery,
};

/// What each account is funded with.
const FUNDING: &str = "10000.00";
/// Senders on each path (REST and gRPC), each with one transfer in flight.
const SENDERS: usize = 8;
/// Seconds of load before any window is measured.
const WARMUP: f64 = 5.0;
/// How long after the load stops every transaction must have ended: short
/// enough that a stalled run fails here, with its diagnosis and every node
/// removed, well before the suite's timeout kills it.
const DRAIN_BOUND: Duration = Duration::from_secs(90);

/// The load's length in seconds: `CLUSTER_SECONDS`, at least 30.
fn load_seconds() -> f64 {
    std::env::var("CLUSTER_SECONDS")
        .ok()
        .map(|text| text.parse::<f64>().expect("CLUSTER_SECONDS is a number"))
        .unwrap_or(45.0)
        .max(30.0)
}

/// Accounts on each path: enough that no account sends more than the
/// default rule set's 1,000 movements an hour, and few enough that no
/// account is paid by more than its 50 distinct sources a day.
fn accounts_per_path(seconds: f64) -> usize {
    ((seconds / 8.0) as usize).clamp(8, 48)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_that_loses_a_broker_node_and_a_replica_of_every_service_under_load_keeps_every_invariant()
 {
    let seconds = load_seconds();
    let killed_at = (seconds / 3.0).max(WARMUP + 10.0);
    let during_end = killed_at + (seconds / 6.0).max(10.0);
    let accounts = accounts_per_path(seconds);

    let mut deployment = Deployment::start().await;
    let owner = deployment.db.owner.clone();
    let operator = operator(deployment.key.path());
    let clients = Clients::connect(deployment.primary(), &operator).await;
    let rest = Rest::new(&deployment.addrs("gateway"), deployment.key.path());
    let (grpc_accounts, rest_accounts) = tokio::join!(
        open_funded_accounts(&clients, accounts, FUNDING),
        rest.open_funded_accounts(accounts, FUNDING)
    );
    eprintln!("cluster: {accounts} funded accounts on each path; load for {seconds} s");

    let start = Instant::now();
    let sampler = Sampler::start(owner.clone(), start, rest_accounts.clone());
    let grpc_tally = Arc::new(Tally::default());
    let rest_tally = Arc::new(Tally::default());
    let grpc_senders = senders::grpc(
        &deployment.addrs("transaction"),
        &operator,
        grpc_accounts,
        SENDERS,
        Arc::clone(&grpc_tally),
    )
    .await;
    let rest_senders = rest.senders(rest_accounts, SENDERS, Arc::clone(&rest_tally));

    sleep_until(start + Duration::from_secs_f64(killed_at)).await;
    let handled = deployment.handled().await;
    for (service, replica, count) in &handled {
        eprintln!(
            "cluster: replica {} of {service} handled {count} messages before the losses",
            replica + 1
        );
        assert!(
            *count > 0.0,
            "replica {} of {service} did no work before the losses",
            replica + 1
        );
    }
    let node_killed = deployment.cluster.nodes()[NODE_KILLED].node().to_owned();
    let loss = start.elapsed().as_secs_f64();
    deployment.kill().await;
    eprintln!(
        "cluster: at {loss:.1} s killed broker node {node_killed} and replica {} of every \
         service (SIGKILL)",
        REPLICA_KILLED + 1
    );

    sleep_until(start + Duration::from_secs_f64(seconds)).await;
    let end = start.elapsed().as_secs_f64();
    let stopped = Instant::now();
    rest_senders.finish().await;
    grpc_senders.finish().await;
    let drained = match until_every_transaction_ends(&owner, DRAIN_BOUND).await {
        Ok(drained) => drained,
        Err(unfinished) => panic!(
            "{unfinished} transactions had not ended {DRAIN_BOUND:?} after the load; outbox \
             rows unsent: {:?}",
            unsent(&owner).await
        ),
    };
    let drained = stopped.elapsed().max(drained);
    let samples = sampler.finish().await;

    let rest_accepted = rest_tally.accepted.load(Ordering::Relaxed);
    let grpc_accepted = grpc_tally.accepted.load(Ordering::Relaxed);
    let (completed, failed): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'completed'),
                count(*) filter (where status = 'failed')
           from transaction.transaction where kind = 'transfer'",
    )
    .fetch_one(&owner)
    .await
    .expect("count outcomes");
    let windows = [
        ("before the losses", WARMUP, loss),
        ("during (just after them)", loss, during_end.min(end)),
        ("after, on the survivors", during_end.min(end), end),
    ];
    let (before, _) = rate(&samples, WARMUP, loss);
    let first = first_completion_after(&samples, loss);
    let recovered = recovery(&samples, loss, end, before);

    eprintln!();
    eprintln!(
        "cluster: {NODES} RabbitMQ nodes, {REPLICAS} replicas of each of 7 services, \
         {SENDERS} senders over REST and {SENDERS} over gRPC, {seconds} s of load"
    );
    eprintln!("| window | seconds | sagas/s | through REST | through gRPC |");
    eprintln!("| --- | --- | --- | --- | --- |");
    for (name, from, to) in windows {
        let (all, through_rest) = rate(&samples, from, to);
        eprintln!(
            "| {name} | {from:.1}–{to:.1} | {all:.1} | {through_rest:.1} | {:.1} |",
            all - through_rest
        );
    }
    let seconds_or_never = |value: Option<f64>| {
        value.map_or_else(|| "never".to_owned(), |value| format!("{value:.1} s"))
    };
    eprintln!(
        "losses at {loss:.1} s: broker node {node_killed} (leader of every queue) and replica {} \
         of each service",
        REPLICA_KILLED + 1
    );
    eprintln!(
        "first completion after the losses: {}; back at ≥ {:.0} % of the rate before (a \
         {RECOVERY_WINDOW} s window): {} after the losses",
        seconds_or_never(first),
        RECOVERED_SHARE * 100.0,
        seconds_or_never(recovered)
    );
    eprintln!(
        "transfers: {} sent and accepted ({rest_accepted} through REST, {grpc_accepted} over \
         gRPC), {completed} completed, {failed} failed; retries {} (REST {}, gRPC {}), of \
         them moved to the other replica {}",
        rest_accepted + grpc_accepted,
        rest_tally.retries.load(Ordering::Relaxed) + grpc_tally.retries.load(Ordering::Relaxed),
        rest_tally.retries.load(Ordering::Relaxed),
        grpc_tally.retries.load(Ordering::Relaxed),
        rest_tally.failovers.load(Ordering::Relaxed) + grpc_tally.failovers.load(Ordering::Relaxed),
    );
    eprintln!(
        "drained: every transaction ended {:.1} s after the load stopped",
        drained.as_secs_f64()
    );
    eprintln!();

    // Work went on through both paths after the losses.
    let (after_all, after_rest) = rate(&samples, loss, end);
    assert!(
        after_rest > 0.0,
        "no transfer through the gateway completed after the losses"
    );
    assert!(
        after_all - after_rest > 0.0,
        "no transfer over gRPC completed after the losses"
    );
    deployment.assert_survivors_run();
    let money = FUNDING.parse::<Decimal>().expect("an amount") * Decimal::from(2 * accounts);
    let transfers = i64::try_from(rest_accepted + grpc_accepted).expect("a count");
    assert_invariants(&owner, &clients, transfers, money).await;
    assert_nothing_parked(&deployment.cluster.url_list(), NAMESPACE).await;
}

/// Outbox rows not yet published, by schema and routing key.
async fn unsent(owner: &sqlx::PgPool) -> Vec<(String, String, i64)> {
    let mut unsent = Vec::new();
    for schema in [
        "customer",
        "account",
        "transaction",
        "orchestrator",
        "fraud",
        "reporting",
    ] {
        let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select routing_key, count(*) from {schema}.outbox
              where sent_at is null group by routing_key"
        )))
        .fetch_all(owner)
        .await
        .unwrap_or_default();
        unsent.extend(
            rows.into_iter()
                .map(|(key, count)| (schema.to_owned(), key, count)),
        );
    }
    unsent
}
