//! One service cut off: the account service runs as a process of its own,
//! and its link to the broker or to the database goes dark for 30 s under
//! load while the rest of the system carries on.

use std::time::Duration;

use corebank_faults::Fault;
use tokio::time::{Instant, sleep};

use crate::row::{Link, Row, Setup};

/// How long the link stays cut.
const CUT: Duration = Duration::from_secs(30);

/// A row whose account service runs apart with its `link` through a fault
/// proxy: `fault` is put on it under load, held for [`CUT`], then lifted.
async fn account_link_row(name: &'static str, link: Link, fault: Fault) {
    let mut row = Row::on_shared_servers(
        name,
        None,
        Setup {
            apart: Some(("account", link)),
            ..Setup::default()
        },
    )
    .await;
    let apart = row.apart.as_ref().expect("the account service runs apart");
    let since = Instant::now();
    apart.proxy.set(fault);
    sleep(CUT).await;
    row.assert_held_back().await;
    let stats = row.apart.as_ref().expect("still apart").proxy.stats();
    eprintln!(
        "{name}: link cut for {:.1} s; proxy so far: {stats:?}",
        since.elapsed().as_secs_f64()
    );
    row.apart
        .as_ref()
        .expect("still apart")
        .proxy
        .set(Fault::Pass);
    row.check_recovery(Instant::now()).await;
}

/// Bytes sent into the blackhole are lost: the account service's broker
/// connection is dead when the link heals, both ends find out through
/// missed heartbeats, and it connects again. Deliveries it had not acked
/// come back to it; replies and events it had not had confirmed go out again
/// from its outbox.
#[tokio::test(flavor = "multi_thread")]
async fn the_account_services_broker_link_blackholed_for_30_s_then_healed_loses_nothing() {
    account_link_row(
        "account's broker link blackholed for 30 s",
        Link::Broker,
        Fault::Blackhole,
    )
    .await;
}

/// The account service's database connections go silent for 30 s, as in a
/// partition shorter than TCP's retransmission timeout: its queries wait,
/// new connections cannot be made, the orchestrator's step timers re-send
/// its commands, and after the heal every byte flows on and the inbox
/// absorbs the re-sent commands.
#[tokio::test(flavor = "multi_thread")]
async fn the_account_services_database_link_stalled_for_30_s_then_healed_loses_nothing() {
    account_link_row(
        "account's database link stalled for 30 s",
        Link::Database,
        Fault::Stall,
    )
    .await;
}
