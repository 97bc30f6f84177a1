//! Transfers the test answers in the participants' place without scripting
//! them (every command succeeds), so that the saga a test scripts runs among
//! a couple of hundred in flight.

use std::collections::HashSet;

use super::*;

/// How long the background transfers may take to end once the scripted
/// part is done.
const LOAD_BOUND: Duration = Duration::from_secs(120);

/// The background transfers: their transactions, and their sagas once the
/// first command of each named it.
#[derive(Default)]
pub(super) struct Background {
    transactions: HashSet<String>,
    sagas: HashSet<String>,
}

impl SagaTest {
    /// Requests `count` transfers whose every command is answered with
    /// success, whenever the test waits for a command of its own.
    pub(super) async fn load(&mut self, count: usize) {
        for _ in 0..count {
            let event = self.request(pb::TransactionKind::Transfer, "1.00").await;
            self.background.transactions.insert(event.transaction_id);
        }
    }

    /// Answers `command` when it belongs to a background transfer; whether it did.
    async fn answered_in_background(&mut self, command: &Received) -> bool {
        if !self.background.sagas.contains(&command.saga_id) {
            if !command.is::<pb::ReserveFundsCommand>() {
                return false;
            }
            let reserve: pb::ReserveFundsCommand = command.decode();
            if !self
                .background
                .transactions
                .contains(&reserve.transaction_id)
            {
                return false;
            }
            self.background.sagas.insert(command.saga_id.clone());
        }
        self.succeed(command).await;
        true
    }

    /// The next command that is not a background transfer's, if one comes
    /// by `deadline`.
    pub(super) async fn receive_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<Received> {
        loop {
            let command = tokio::time::timeout_at(deadline, self.commands.recv())
                .await
                .ok()?
                .expect("participant queue open");
            if !self.answered_in_background(&command).await {
                return Some(command);
            }
        }
    }

    /// Answers the background transfers until every one's saga has ended
    /// (the test's own commands are kept for later); how many completed.
    pub(super) async fn finish_load(&mut self) -> i64 {
        let ids: Vec<Uuid> = self
            .background
            .transactions
            .iter()
            .map(|id| id.parse().expect("a transaction id"))
            .collect();
        let deadline = tokio::time::Instant::now() + LOAD_BOUND;
        loop {
            let (ended, completed): (i64, i64) = sqlx::query_as(
                "select count(*) filter (where state in ('completed', 'compensated', 'failed')),
                        count(*) filter (where state = 'completed')
                   from orchestrator.saga where transaction_id = any($1)",
            )
            .bind(&ids)
            .fetch_one(&self.db.owner)
            .await
            .expect("count background sagas");
            if ended == ids.len() as i64 {
                return completed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ended} of {} background sagas ended within {LOAD_BOUND:?}",
                ids.len()
            );
            let pause = tokio::time::Instant::now() + Duration::from_millis(200);
            if let Some(command) = self.receive_until(pause).await {
                self.buffered.push_back(command);
            }
        }
    }
}
