//! Replicas side by side: two orchestrators and two account services, and
//! two orchestrators whose clocks disagree.

use tokio::time::Instant;

use crate::row::{Row, Setup};

/// Two replicas of the orchestrator and two of the account service, side by
/// side for the whole load, competing for the same queues, outboxes and
/// timers: every saga is handled exactly once (every invariant holds), and
/// each second replica did its share of the work.
#[tokio::test(flavor = "multi_thread")]
async fn two_orchestrators_and_two_account_services_side_by_side_handle_every_saga_once() {
    let name = "replicas side by side";
    let mut row = Row::on_shared_servers(
        name,
        None,
        Setup {
            replicas: &["orchestrator", "account"],
            ..Setup::default()
        },
    )
    .await;
    row.check_recovery(Instant::now()).await;
}

/// Two orchestrators whose clocks are 2 s apart share the step timers for a
/// whole load. The second runs ahead, so it finds a deadline the first set
/// 2 s early: with a 2.03 s step timeout it re-sends every step still
/// waiting after 30 ms (a fast run leaves few steps waiting 100 ms). Each timer fires once for each attempt (never once
/// per replica), the re-sends are absorbed, every transfer completes and
/// every invariant holds.
#[tokio::test(flavor = "multi_thread")]
async fn two_orchestrators_with_clocks_two_seconds_apart_share_the_timers_and_complete_every_saga()
{
    let name = "orchestrator clocks 2 s apart";
    let timeout = ("COREBANK_SAGA_STEP_TIMEOUT_MS", "2030");
    let mut row = Row::on_shared_servers(
        name,
        None,
        Setup {
            env: &[timeout],
            replicas: &["orchestrator"],
            replica_env: &[timeout, ("COREBANK_CLOCK_SKEW_MS", "2000")],
            ..Setup::default()
        },
    )
    .await;
    row.check_recovery(Instant::now()).await;
    let owner = &row.owner;
    let failed: i64 =
        sqlx::query_scalar("select count(*) from transaction.transaction where status = 'failed'")
            .fetch_one(owner)
            .await
            .expect("count failed transactions");
    assert_eq!(failed, 0, "{name}: transfers failed");
    let (timed_out, twice): (i64, i64) = sqlx::query_as(
        "select (select count(*) from orchestrator.saga_log
                  where event in ('retried', 'timed_out')),
                (select count(*) from (select 1 from orchestrator.saga_log
                                        where event in ('retried', 'timed_out')
                                        group by saga_id, step, direction, attempt
                                       having count(*) > 1) as fired_twice)",
    )
    .fetch_one(owner)
    .await
    .expect("count timer firings");
    eprintln!("{name}: {timed_out} step timers fired, {twice} of them twice");
    assert!(
        timed_out > 0,
        "{name}: no timer fired: the skew tested nothing"
    );
    assert_eq!(twice, 0, "{name}: a timer fired once per replica");
}
