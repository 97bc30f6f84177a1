//! Crashes at the dangerous spots (failpoints) and a graceful stop, each
//! under load and followed by a restart.

use crate::row::{Row, Setup};

/// A row whose corebank kills itself at `failpoint` (see
/// `corebank_platform::failpoint`) under load and is started again.
async fn failpoint_row(name: &'static str, failpoint: &str) {
    let mut row = Row::on_shared_servers(
        name,
        None,
        Setup {
            env: &[("COREBANK_FAILPOINT", failpoint)],
            ..Setup::default()
        },
    )
    .await;
    let restarted = row.crash_at_failpoint().await;
    row.check_recovery(restarted).await;
}

// The orchestrator's commands go out through its outbox: the step's state and
// the next command commit together, and the relay publishes them after.

#[tokio::test(flavor = "multi_thread")]
async fn the_orchestrator_killed_between_its_commit_and_the_publish_of_the_next_command_loses_nothing()
 {
    failpoint_row(
        "orchestrator killed before publishing",
        "relay.before_publish:orchestrator:3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_killed_after_its_effects_commit_before_the_ack_applies_them_once() {
    failpoint_row(
        "account service killed before acking",
        "consumer.before_ack:account.commands:3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_killed_after_publishing_before_marking_its_outbox_sent_publishes_again_harmlessly()
 {
    failpoint_row(
        "account service killed before marking sent",
        "relay.before_mark_sent:account:3",
    )
    .await;
}

/// SIGTERM under load: corebank finishes the batches in hand, acknowledges
/// them and flushes every outbox before it exits, so after the restart no
/// message the stopped process handled is delivered again.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_and_flushes_so_nothing_is_handled_twice_after_the_restart() {
    let name = "sigterm under load";
    let mut row = Row::on_shared_servers(name, None, Setup::default()).await;
    let restarted = row.stop_gracefully_and_restart().await;
    let duplicates = row.check_recovery(restarted).await;
    assert_eq!(
        duplicates, 0.0,
        "{name}: messages the stopped process had handled came again"
    );
}
