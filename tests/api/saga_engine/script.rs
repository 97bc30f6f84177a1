//! What the test says and hears on the broker in the participants' place:
//! requested movements published, commands received in order or picked by
//! kind, and replies scripted per command.

use super::*;

impl SagaTest {
    pub(super) async fn publish(&self, message: OutgoingMessage) {
        let exchange = self.namespace.exchange(message.exchange);
        self.publisher
            .basic_publish(
                exchange.into(),
                message.routing_key.clone().into(),
                BasicPublishOptions::default(),
                &message.payload,
                message.properties("saga-test"),
            )
            .await
            .expect("publish")
            .await
            .expect("broker confirms");
    }

    /// Publishes a requested movement; returns the event to re-publish it.
    pub(super) async fn request(
        &self,
        kind: pb::TransactionKind,
        amount: &str,
    ) -> pb::TransactionRequestedEvent {
        let event = pb::TransactionRequestedEvent {
            transaction_id: Uuid::now_v7().to_string(),
            kind: kind as i32,
            source_account_id: if kind == pb::TransactionKind::Deposit {
                String::new()
            } else {
                Uuid::now_v7().to_string()
            },
            destination_account_id: if kind == pb::TransactionKind::Withdrawal {
                String::new()
            } else {
                Uuid::now_v7().to_string()
            },
            amount: Some(pb::Money {
                currency: "USD".to_owned(),
                amount: amount.to_owned(),
            }),
        };
        self.publish_request(&event).await;
        event
    }

    pub(super) async fn publish_request(&self, event: &pb::TransactionRequestedEvent) {
        let routing_key = match pb::TransactionKind::try_from(event.kind) {
            Ok(pb::TransactionKind::Deposit) => wire::event::DEPOSIT_REQUESTED,
            Ok(pb::TransactionKind::Withdrawal) => wire::event::WITHDRAWAL_REQUESTED,
            _ => wire::event::TRANSFER_REQUESTED,
        };
        let message = OutgoingMessage::event(
            routing_key,
            wire::message_type::<pb::TransactionRequestedEvent>(),
            event.encode_to_vec(),
        );
        self.publish(message).await;
    }

    pub(super) async fn reply(
        &self,
        command: &Received,
        outcome: pb::CommandOutcome,
        reason_code: &str,
    ) {
        self.send_reply(command, outcome, reason_code, None).await;
    }

    pub(super) async fn send_reply(
        &self,
        command: &Received,
        outcome: pb::CommandOutcome,
        reason_code: &str,
        wait_deadline: Option<DateTime<Utc>>,
    ) {
        let reply = pb::CommandReply {
            command_id: command.command_id.clone(),
            saga_id: command.saga_id.clone(),
            outcome: outcome as i32,
            reason_code: reason_code.to_owned(),
            detail: if reason_code.is_empty() {
                String::new()
            } else {
                format!("{reason_code} (scripted)")
            },
            hold_id: if command.is::<pb::ReserveFundsCommand>() {
                "hold-1".to_owned()
            } else {
                String::new()
            },
            journal_id: if command.is::<pb::PostTransferCommand>()
                || command.is::<pb::PostDepositCommand>()
            {
                "journal-1".to_owned()
            } else {
                String::new()
            },
            wait_deadline: wait_deadline.map(to_timestamp),
        };
        let message = OutgoingMessage::reply(
            wire::service::ORCHESTRATOR,
            wire::message_type::<pb::CommandReply>(),
            reply.encode_to_vec(),
        );
        self.publish(message).await;
    }

    pub(super) async fn succeed(&self, command: &Received) {
        self.reply(command, pb::CommandOutcome::Succeeded, "").await;
    }

    pub(super) async fn reject(&self, command: &Received, reason_code: &str) {
        self.reply(command, pb::CommandOutcome::Rejected, reason_code)
            .await;
    }

    /// Answers WAITING: the final answer follows by `deadline`.
    pub(super) async fn wait(&self, command: &Received, deadline: DateTime<Utc>) {
        self.send_reply(command, pb::CommandOutcome::Waiting, "", Some(deadline))
            .await;
    }

    /// Approves the screen of `saga_id`, as a fraud service with nothing to say would.
    pub(super) async fn approve_screen(&mut self, saga_id: &str) -> Received {
        let screen = self
            .expect_where(|c| c.is::<pb::ScreenTransactionCommand>() && c.saga_id == saga_id)
            .await;
        self.succeed(&screen).await;
        screen
    }

    /// The release of `saga_id`'s reserve, checked to name that reserve's
    /// command and to carry the compensation's own command id.
    pub(super) async fn expect_release_of(&mut self, saga_id: &str) -> Received {
        let release = self
            .expect_where(|c| c.is::<pb::ReleaseFundsCommand>() && c.saga_id == saga_id)
            .await;
        assert_eq!(
            release
                .decode::<pb::ReleaseFundsCommand>()
                .reserve_command_id,
            format!("{saga_id}:reserve:forward")
        );
        assert_eq!(release.command_id, format!("{saga_id}:reserve:compensate"));
        release
    }

    /// How many commands of `M` were sent and are still kept for later.
    pub(super) fn buffered_count<M: prost::Name>(&self) -> usize {
        self.buffered
            .iter()
            .filter(|command| command.is::<M>())
            .count()
    }

    /// The next command sent, in order, whatever it is.
    pub(super) async fn next_command(&mut self) -> Received {
        if let Some(command) = self.buffered.pop_front() {
            return command;
        }
        self.receive_until(tokio::time::Instant::now() + WAIT)
            .await
            .expect("a command arrives in time")
    }

    /// The next command of `M`, keeping the others for later.
    pub(super) async fn expect<M: prost::Name>(&mut self) -> Received {
        self.expect_where(|command| command.is::<M>()).await
    }

    pub(super) async fn expect_where(&mut self, wanted: impl Fn(&Received) -> bool) -> Received {
        if let Some(index) = self.buffered.iter().position(&wanted) {
            return self.buffered.remove(index).expect("buffered");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let command = self
                .receive_until(deadline)
                .await
                .expect("the expected command arrives in time");
            if wanted(&command) {
                return command;
            }
            self.buffered.push_back(command);
        }
    }

    /// Asserts that nothing `unwanted` is sent within `window` (what is sent
    /// meanwhile is dropped); `what` says what should not have come.
    pub(super) async fn assert_none_sent(
        &mut self,
        window: Duration,
        what: &str,
        unwanted: impl Fn(&Received) -> bool,
    ) {
        let sent = self.drain(window).await;
        assert!(!sent.iter().any(unwanted), "{what}: {sent:?}");
    }

    /// Every command sent within `window`.
    pub(super) async fn drain(&mut self, window: Duration) -> Vec<Received> {
        let mut all: Vec<Received> = self.buffered.drain(..).collect();
        let deadline = tokio::time::Instant::now() + window;
        while let Some(command) = self.receive_until(deadline).await {
            all.push(command);
        }
        all
    }
}
