//! The account service as a saga participant (AMQP ⇄ domain): reserve,
//! release, post and deposit commands, and the KYC events it mirrors.
//!
//! Every command applies at most once per command id: the `command_log`
//! keeps the first reply, and a re-sent command (same command id, new message
//! id) gets that reply again without a second effect. A release that arrives
//! before the reserve it undoes leaves a tombstone, and that reserve is
//! refused when it shows up: no late hold. Business refusals become REJECTED
//! replies; anything else is transient and retried by the consumer.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use corebank_platform::ErrorCode;
use corebank_platform::clock::SharedClock;
use corebank_platform::error::ApiError;
use corebank_platform::messaging::{
    self, Exchange, Handler, HandlerError, IncomingMessage, OutgoingMessage, QueueSpec,
};
use corebank_platform::money::{self, AmountLimits, Currency};
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use rust_decimal::Decimal;
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use crate::domain::{Direction, HoldStatus, Journal, MAX_HOLD_TTL};
use crate::kyc;
use crate::store::{self, ledger};

mod effects;
mod kyc_events;

pub use kyc_events::KycHandler;

use effects::{post, release};

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

impl Handler for CommandHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        let command = Command::decode(message)?;
        let (command_id, saga_id) = command.ids();
        let (command_id, saga_id) = (command_id.to_owned(), saga_id.to_owned());
        if command_id.is_empty() {
            return Err(HandlerError::malformed(anyhow!(
                "command without a command id"
            )));
        }
        let saga_uuid = Uuid::parse_str(&saga_id).map_err(HandlerError::malformed)?;
        let now = self.clock.now();

        if let Some(stored) = stored_reply(tx, &command_id).await? {
            tracing::debug!(%command_id, "duplicate command, replaying the stored reply");
            messaging::enqueue(tx, reply_message(stored, saga_uuid, message)).await?;
            return Ok(());
        }

        // The events and the reply, written together at the end.
        let mut outgoing = Vec::new();
        // The effect runs in a savepoint so a refusal leaves nothing behind
        // but the refusal itself.
        let mut savepoint = tx.begin().await?;
        let result = match &command {
            Command::Reserve(c) => self.reserve(&mut savepoint, c, now).await,
            Command::Release(c) => release(&mut savepoint, c, now).await,
            Command::Post(c) => post(&mut savepoint, c, now).await,
            Command::Deposit(c) => self.deposit(&mut savepoint, c, now).await,
        };
        let reply = match result {
            Ok(applied) => {
                savepoint.commit().await?;
                outgoing.extend(
                    applied
                        .events
                        .into_iter()
                        .map(|event| event.with_correlation_id(saga_uuid).caused_by(message)),
                );
                let reply = pb::CommandReply {
                    command_id: command_id.clone(),
                    saga_id: saga_id.clone(),
                    outcome: pb::CommandOutcome::Succeeded as i32,
                    reason_code: String::new(),
                    detail: applied.detail,
                    hold_id: applied.hold_id.map(|id| id.to_string()).unwrap_or_default(),
                    journal_id: applied
                        .journal_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    wait_deadline: None,
                };
                store_reply(tx, &command_id, &reply, applied.hold_id, now).await?;
                reply
            }
            Err(error) if rejects(&error) => {
                savepoint.rollback().await?;
                tracing::info!(%command_id, reason = error.reason(), "command rejected");
                let reply = pb::CommandReply {
                    command_id: command_id.clone(),
                    saga_id: saga_id.clone(),
                    outcome: pb::CommandOutcome::Rejected as i32,
                    reason_code: error.reason().to_owned(),
                    detail: error.message().to_owned(),
                    hold_id: String::new(),
                    journal_id: String::new(),
                    wait_deadline: None,
                };
                store_reply(tx, &command_id, &reply, None, now).await?;
                reply
            }
            Err(error) => return Err(HandlerError::transient(anyhow!(error.to_string()))),
        };
        outgoing.push(reply_message(reply, saga_uuid, message));
        messaging::enqueue_all(tx, outgoing).await?;
        Ok(())
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

async fn stored_reply(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<Option<pb::CommandReply>, HandlerError> {
    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("select reply from command_log where command_id = $1")
            .bind(command_id)
            .fetch_optional(&mut *conn)
            .await?;
    stored
        .map(|bytes| {
            pb::CommandReply::decode(bytes.as_slice()).map_err(|error| {
                HandlerError::permanent(anyhow!("stored reply does not decode: {error}"))
            })
        })
        .transpose()
}

async fn store_reply(
    conn: &mut PgConnection,
    command_id: &str,
    reply: &pb::CommandReply,
    hold_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    sqlx::query(
        "insert into command_log (command_id, reply, hold_id, created_at) values ($1, $2, $3, $4)",
    )
    .bind(command_id)
    .bind(reply.encode_to_vec())
    .bind(hold_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `None`: the reserve has not been seen; `Some(None)`: it was rejected;
/// `Some(Some(hold))`: it placed `hold`.
async fn reserved_hold(
    conn: &mut PgConnection,
    reserve_command_id: &str,
) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    let row: Option<Option<Uuid>> =
        sqlx::query_scalar("select hold_id from command_log where command_id = $1")
            .bind(reserve_command_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row)
}

/// What a reserve checks before it places its hold.
#[derive(Debug, sqlx::FromRow)]
struct ReserveGate {
    /// Its compensation arrived first (a tombstone): refused, no late hold.
    cancelled: bool,
    /// The account's owner; none when the account does not exist.
    customer_id: Option<Uuid>,
    /// Whether the KYC mirror says the owner is VERIFIED.
    verified: bool,
}

/// The tombstone, the account's owner and the owner's KYC status, in one statement.
async fn reserve_gate(
    conn: &mut PgConnection,
    command_id: &str,
    account_id: Option<Uuid>,
) -> Result<ReserveGate, sqlx::Error> {
    sqlx::query_as(
        "select exists (select 1 from command_tombstone where command_id = $1) as cancelled,
                a.customer_id,
                coalesce(k.kyc_status = 'verified', false) as verified
           from (select 1) as one
           left join account a on a.account_id = $2
           left join customer_kyc k on k.customer_id = a.customer_id",
    )
    .bind(command_id)
    .bind(account_id)
    .fetch_one(conn)
    .await
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
