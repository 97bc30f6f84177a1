//! The account service as a saga participant (AMQP ⇄ domain): reserve,
//! release, post and deposit commands, and the KYC events it mirrors.
//!
//! Every command applies at most once per command id: the `command_log`
//! keeps the first reply, and a re-sent command (same command id, new message
//! id) gets that reply again without a second effect. A release that arrives
//! before the reserve it undoes leaves a tombstone, and that reserve is
//! refused when it shows up: no late hold. Business refusals become REJECTED
//! replies; anything else is transient and retried by the consumer.
//!
//! A batch of commands reads the command log with one statement and writes
//! its replies to the log and the outbox with one statement; its transfer
//! posts, and its reserves on accounts nothing else in the batch touches,
//! are applied as sets, one statement each (see `together`); only the
//! commands that can refuse after writing get a savepoint. If the batch
//! fails, the runner applies its commands again one at a time, each in a
//! savepoint.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use corebank_platform::ErrorCode;
use corebank_platform::clock::SharedClock;
use corebank_platform::error::ApiError;
use corebank_platform::messaging::{
    BatchError, Exchange, Handler, HandlerError, IncomingMessage, OutgoingMessage, QueueSpec,
    message_span,
};
use corebank_platform::money::{self, AmountLimits, Currency};
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use rust_decimal::Decimal;
use sqlx::{Acquire, PgConnection};
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::{Direction, HoldStatus, Journal, MAX_HOLD_TTL};
use crate::kyc;
use crate::store::{self, holds, ledger};

mod effects;
mod kyc_events;
mod log;
mod together;

pub use kyc_events::KycHandler;

use effects::{post, release};
use log::CommandLog;

/// Refusal reasons only the saga path produces.
pub mod reason {
    /// The reserve arrived after its compensation: refused, no late hold.
    pub const RESERVE_CANCELLED: &str = "RESERVE_CANCELLED";
    /// A post or release named a reserve that placed no hold.
    pub const NOTHING_RESERVED: &str = "NOTHING_RESERVED";
    /// A release found the hold already captured.
    pub const HOLD_ALREADY_CAPTURED: &str = "HOLD_ALREADY_CAPTURED";
    /// A command field did not parse.
    pub const INVALID_COMMAND: &str = "INVALID_COMMAND";
}

/// Saga commands for this service.
pub fn command_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::ACCOUNT_COMMANDS).bind(Exchange::Commands, wire::service::ACCOUNT)
}

/// KYC changes of customers, mirrored to gate debits.
pub fn kyc_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::ACCOUNT_KYC)
        .bind(Exchange::Events, wire::event::CUSTOMER_KYC_CHANGED)
}

/// A decoded command.
#[derive(Debug)]
enum Command {
    Reserve(pb::ReserveFundsCommand),
    Release(pb::ReleaseFundsCommand),
    Post(pb::PostTransferCommand),
    Deposit(pb::PostDepositCommand),
}

impl Command {
    fn decode(message: &IncomingMessage) -> Result<Self, HandlerError> {
        let payload = message.payload.as_slice();
        let kind = message.message_type.as_str();
        let malformed = HandlerError::malformed;
        if kind == pb::ReserveFundsCommand::full_name() {
            pb::ReserveFundsCommand::decode(payload)
                .map(Self::Reserve)
                .map_err(malformed)
        } else if kind == pb::ReleaseFundsCommand::full_name() {
            pb::ReleaseFundsCommand::decode(payload)
                .map(Self::Release)
                .map_err(malformed)
        } else if kind == pb::PostTransferCommand::full_name() {
            pb::PostTransferCommand::decode(payload)
                .map(Self::Post)
                .map_err(malformed)
        } else if kind == pb::PostDepositCommand::full_name() {
            pb::PostDepositCommand::decode(payload)
                .map(Self::Deposit)
                .map_err(malformed)
        } else {
            Err(HandlerError::permanent(anyhow!(
                "unknown command type {kind:?}"
            )))
        }
    }

    fn ids(&self) -> (&str, &str) {
        match self {
            Self::Reserve(c) => (&c.command_id, &c.saga_id),
            Self::Release(c) => (&c.command_id, &c.saga_id),
            Self::Post(c) => (&c.command_id, &c.saga_id),
            Self::Deposit(c) => (&c.command_id, &c.saga_id),
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Default)]
struct Applied {
    hold_id: Option<Uuid>,
    journal_id: Option<Uuid>,
    detail: String,
    events: Vec<OutgoingMessage>,
}

/// Handles saga commands.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    clock: SharedClock,
    limits: AmountLimits,
}

impl CommandHandler {
    pub fn new(clock: SharedClock, limits: AmountLimits) -> Self {
        Self { clock, limits }
    }
}

/// Whether every command runs in a savepoint of its own, or only those that
/// can refuse after they wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoints {
    Always,
    WhereNeeded,
}

impl Command {
    /// Whether a refusal may come after this command wrote something, so
    /// only a savepoint can take the refusal's writes back. A reserve, a
    /// release and a post check everything before they write (a conditional
    /// update that touches nothing writes nothing); a deposit does not.
    fn writes_before_refusing(&self) -> bool {
        match self {
            Self::Deposit(_) => true,
            Self::Reserve(_) | Self::Release(_) | Self::Post(_) => false,
        }
    }

    /// The reserve a post or release refers to.
    fn reserve_command_id(&self) -> Option<&str> {
        match self {
            Self::Release(c) => Some(&c.reserve_command_id),
            Self::Post(c) => Some(&c.reserve_command_id),
            Self::Reserve(_) | Self::Deposit(_) => None,
        }
    }
}

/// A command of the batch, decoded, with where it came from.
struct Decoded<'m> {
    index: usize,
    message: &'m IncomingMessage,
    command: Command,
    saga_id: Uuid,
}

impl CommandHandler {
    /// Applies commands in order in `tx`: one statement reads the command
    /// log for all of them, each fresh command runs its effect (in a
    /// savepoint when `savepoints` asks for one), and one statement each
    /// writes the replies to the log and the replies and events to the
    /// outbox.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
        savepoints: Savepoints,
    ) -> Result<(), BatchError> {
        let mut decoded = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let (command, saga_id) =
                decode(message).map_err(|error| BatchError::at(index, error))?;
            decoded.push(Decoded {
                index,
                message,
                command,
                saga_id,
            });
        }
        let named: Vec<&str> = decoded
            .iter()
            .flat_map(|d| [Some(d.command.ids().0), d.command.reserve_command_id()])
            .flatten()
            .collect();
        let mut log = CommandLog::load(tx, &named)
            .await
            .map_err(BatchError::whole)?;
        let mut together = match savepoints {
            Savepoints::WhereNeeded => together::plan(&decoded, &log, self.limits),
            Savepoints::Always => together::Together::default(),
        };
        let now = self.clock.now();
        let mut outgoing = Vec::new();
        for d in &decoded {
            let answer = self
                .answer(tx, d, &decoded, &mut log, &mut together, savepoints, now)
                .instrument(message_span(d.message))
                .await?;
            outgoing.extend(answer);
        }
        log.write(tx, outgoing, now)
            .await
            .map_err(BatchError::whole)?;
        Ok(())
    }

    /// One command's outgoing messages (events, then the reply), built in
    /// its span so they continue its trace: the stored reply again for a
    /// command handled before, else the effect's (a set member's from its
    /// set's statement).
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        tx: &mut PgConnection,
        d: &Decoded<'_>,
        decoded: &[Decoded<'_>],
        log: &mut CommandLog,
        together: &mut together::Together,
        savepoints: Savepoints,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutgoingMessage>, BatchError> {
        let command_id = d.command.ids().0;
        if let Some(stored) = log
            .reply(command_id)
            .map_err(|e| BatchError::at(d.index, e))?
        {
            tracing::debug!(%command_id, "duplicate command, replaying the stored reply");
            return Ok(vec![reply_message(stored, d.saga_id, d.message)]);
        }
        let (reply, hold_id, events) = match together.take(tx, d, decoded, now).await? {
            Some(result) => reply_of(d, result, false)?,
            None => {
                let savepoint =
                    savepoints == Savepoints::Always || d.command.writes_before_refusing();
                self.apply_one(tx, d, log, savepoint, now).await?
            }
        };
        log.record(command_id, &reply, hold_id);
        let mut outgoing: Vec<OutgoingMessage> = events
            .into_iter()
            .map(|event| event.with_correlation_id(d.saga_id).caused_by(d.message))
            .collect();
        outgoing.push(reply_message(reply, d.saga_id, d.message));
        Ok(outgoing)
    }

    /// Runs one fresh command's effect: its reply, the hold to log with it,
    /// and its events.
    async fn apply_one(
        &self,
        tx: &mut PgConnection,
        d: &Decoded<'_>,
        log: &CommandLog,
        savepoint: bool,
        now: DateTime<Utc>,
    ) -> Result<(pb::CommandReply, Option<Uuid>, Vec<OutgoingMessage>), BatchError> {
        let failed = |error: sqlx::Error| BatchError::at(d.index, error.into());
        let result = if savepoint {
            let mut savepoint = tx.begin().await.map_err(failed)?;
            let result = self.effect(&mut savepoint, &d.command, log, now).await;
            match &result {
                Ok(_) => savepoint.commit().await.map_err(failed)?,
                Err(_) => savepoint.rollback().await.map_err(failed)?,
            }
            result
        } else {
            self.effect(tx, &d.command, log, now).await
        };
        reply_of(d, result, savepoint)
    }

    async fn effect(
        &self,
        conn: &mut PgConnection,
        command: &Command,
        log: &CommandLog,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
        match command {
            Command::Reserve(c) => self.reserve(conn, c, now).await,
            Command::Release(c) => release(conn, c, log, now).await,
            Command::Post(c) => post(conn, c, log, now).await,
            Command::Deposit(c) => self.deposit(conn, c, now).await,
        }
    }
}

/// A command's reply, the hold to log with it, and its events, from its
/// effect's `result`. A refusal is answered; but one that came without a
/// savepoint (`in_savepoint` false) only if it ran no failing statement:
/// the domain refuses with other codes, and an invalid argument is the
/// database's (a text it cannot store), so the batch is redone with
/// savepoints.
fn reply_of(
    d: &Decoded<'_>,
    result: Result<Applied, ApiError>,
    in_savepoint: bool,
) -> Result<(pb::CommandReply, Option<Uuid>, Vec<OutgoingMessage>), BatchError> {
    if !in_savepoint
        && let Err(error) = &result
        && error.code() == ErrorCode::InvalidArgument
    {
        return Err(BatchError::whole(HandlerError::transient(anyhow!(
            error.to_string()
        ))));
    }
    let (command_id, saga_id) = d.command.ids();
    let mut reply = pb::CommandReply {
        command_id: command_id.to_owned(),
        saga_id: saga_id.to_owned(),
        ..pb::CommandReply::default()
    };
    match result {
        Ok(applied) => {
            reply.outcome = pb::CommandOutcome::Succeeded as i32;
            reply.detail = applied.detail;
            reply.hold_id = applied.hold_id.map(|id| id.to_string()).unwrap_or_default();
            reply.journal_id = applied
                .journal_id
                .map(|id| id.to_string())
                .unwrap_or_default();
            Ok((reply, applied.hold_id, applied.events))
        }
        Err(error) if rejects(&error) => {
            tracing::info!(%command_id, reason = error.reason(), "command rejected");
            reply.outcome = pb::CommandOutcome::Rejected as i32;
            reply.reason_code = error.reason().to_owned();
            reply.detail = error.message().to_owned();
            Ok((reply, None, Vec::new()))
        }
        Err(error) => Err(BatchError::at(
            d.index,
            HandlerError::transient(anyhow!(error.to_string())),
        )),
    }
}

/// Decodes a command and checks its ids.
fn decode(message: &IncomingMessage) -> Result<(Command, Uuid), HandlerError> {
    let command = Command::decode(message)?;
    let (command_id, saga_id) = command.ids();
    if command_id.is_empty() {
        return Err(HandlerError::malformed(anyhow!(
            "command without a command id"
        )));
    }
    let saga_id = Uuid::parse_str(saga_id).map_err(HandlerError::malformed)?;
    Ok((command, saga_id))
}

impl Handler for CommandHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        self.apply(tx, &[message], Savepoints::Always)
            .await
            .map_err(|failure| failure.error)
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        self.apply(tx, messages, Savepoints::WhereNeeded).await
    }
}

/// A business refusal (answered REJECTED) rather than a passing failure
/// (retried).
fn rejects(error: &ApiError) -> bool {
    matches!(
        error.code(),
        ErrorCode::FailedPrecondition
            | ErrorCode::NotFound
            | ErrorCode::InvalidArgument
            | ErrorCode::AlreadyExists
    )
}

fn reply_message(
    reply: pb::CommandReply,
    saga_id: Uuid,
    cause: &IncomingMessage,
) -> OutgoingMessage {
    OutgoingMessage::reply(
        wire::service::ORCHESTRATOR,
        pb::CommandReply::full_name(),
        reply.encode_to_vec(),
    )
    .caused_by(cause)
    .with_correlation_id(saga_id)
}
