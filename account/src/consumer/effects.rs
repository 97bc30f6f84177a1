//! What each saga command does to the ledger: a refusal is an `ApiError`, a
//! success the events to publish. A post or a deposit runs in a savepoint of
//! its own, since it can refuse after it wrote; a reserve and a release must
//! refuse only before their first write (see `Command::writes_before_refusing`).

use corebank_platform::time::to_timestamp;

use super::*;

pub(super) fn invalid(what: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::failed_precondition(reason::INVALID_COMMAND, format!("{what}: {detail}"))
}

pub(super) fn parse_uuid(field: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|error| invalid(field, error))
}

pub(super) fn parse_money(
    money: Option<&pb::Money>,
    limits: AmountLimits,
) -> Result<(Currency, Decimal), ApiError> {
    let money = money.ok_or_else(|| invalid("amount", "is required"))?;
    let currency =
        Currency::parse(&money.currency).map_err(|error| invalid("amount.currency", error))?;
    let amount = money::parse_amount(currency, &money.amount, limits)
        .map_err(|error| invalid("amount.amount", error))?;
    Ok((currency, amount))
}

fn cancelled() -> ApiError {
    ApiError::failed_precondition(
        reason::RESERVE_CANCELLED,
        "the reserve was compensated before it arrived",
    )
}

/// Why a reserve's shut gate refuses it.
fn shut(gate: &holds::ReserveGate, account_id: Uuid) -> ApiError {
    if gate.cancelled {
        return cancelled();
    }
    match gate.customer_id {
        None => store::account_not_found(account_id),
        Some(customer_id) => ApiError::failed_precondition(
            crate::domain::reason::KYC_NOT_VERIFIED,
            format!("customer {customer_id} is not verified"),
        ),
    }
}

impl CommandHandler {
    pub(super) async fn reserve(
        &self,
        conn: &mut PgConnection,
        command: &pb::ReserveFundsCommand,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
        let account_id = parse_uuid("account_id", &command.account_id);
        let money = parse_money(command.amount.as_ref(), self.limits);
        let (Ok(account_id), Ok((currency, amount))) = (&account_id, &money) else {
            // A tombstone outranks a malformed command: the gate alone first.
            let gate =
                holds::reserve_gate(conn, &command.command_id, account_id.as_ref().ok().copied())
                    .await?;
            if gate.cancelled {
                return Err(cancelled());
            }
            account_id?;
            money?;
            unreachable!("a field failed to parse");
        };
        let (account_id, currency, amount) = (*account_id, *currency, *amount);
        let hold_id = Uuid::now_v7();
        let outcome = holds::place_hold(
            conn,
            &command.command_id,
            hold_id,
            account_id,
            currency,
            amount,
            &command.transaction_id,
            now + MAX_HOLD_TTL,
            now,
        )
        .await?;
        reserved(outcome, account_id, command)
    }

    pub(super) async fn deposit(
        &self,
        conn: &mut PgConnection,
        command: &pb::PostDepositCommand,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
        let account_id = parse_uuid("account_id", &command.account_id)?;
        let (currency, amount) = parse_money(command.amount.as_ref(), self.limits)?;
        let journal = ledger::deposit(
            conn,
            account_id,
            currency,
            amount,
            &command.transaction_id,
            now,
        )
        .await?;
        Ok(posted(journal, &command.transaction_id))
    }
}

/// What a reserve's hold placement means for its command: the hold and its
/// event, or the refusal of a shut gate.
pub(super) fn reserved(
    outcome: holds::Reserved,
    account_id: Uuid,
    command: &pb::ReserveFundsCommand,
) -> Result<Applied, ApiError> {
    let hold = match outcome {
        holds::Reserved::Placed(hold) => hold,
        holds::Reserved::Gated(gate) => return Err(shut(&gate, account_id)),
    };
    let event = pb::FundsReservedEvent {
        hold_id: hold.hold_id.to_string(),
        account_id: account_id.to_string(),
        amount: Some(pb::Money {
            currency: hold.currency.code().to_owned(),
            amount: hold.currency.format(hold.amount),
        }),
        transaction_id: command.transaction_id.clone(),
    };
    Ok(Applied {
        hold_id: Some(hold.hold_id),
        events: vec![OutgoingMessage::event_of(
            wire::event::FUNDS_RESERVED,
            &event,
        )],
        ..Applied::default()
    })
}

pub(super) async fn release(
    conn: &mut PgConnection,
    command: &pb::ReleaseFundsCommand,
    log: &CommandLog,
    now: DateTime<Utc>,
) -> Result<Applied, ApiError> {
    let Some(reserved) = log.reserved_hold(&command.reserve_command_id) else {
        // The reserve never arrived (or is still on its way): make sure it
        // never takes effect.
        sqlx::query(
            "insert into command_tombstone (command_id, compensated_by, created_at) values ($1, $2, $3)
             on conflict (command_id) do nothing",
        )
        .bind(&command.reserve_command_id)
        .bind(&command.command_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        return Ok(Applied {
            detail: "nothing was reserved; the reserve is now refused".to_owned(),
            ..Applied::default()
        });
    };
    let Some(hold_id) = reserved else {
        return Ok(Applied {
            detail: "the reserve was rejected; nothing to release".to_owned(),
            ..Applied::default()
        });
    };
    let hold = store::get_hold(conn, hold_id).await?;
    match hold.status_at(now) {
        HoldStatus::Active => {}
        HoldStatus::Released | HoldStatus::Expired => {
            return Ok(Applied {
                hold_id: Some(hold_id),
                detail: "already released".to_owned(),
                ..Applied::default()
            });
        }
        HoldStatus::Captured => {
            return Err(ApiError::failed_precondition(
                reason::HOLD_ALREADY_CAPTURED,
                format!("hold {hold_id} was captured"),
            ));
        }
    }
    let released = holds::release_hold(conn, hold_id, now).await?;
    let event = pb::FundsReleasedEvent {
        hold_id: hold_id.to_string(),
        account_id: released.account_id.to_string(),
        amount: Some(pb::Money {
            currency: released.currency.code().to_owned(),
            amount: released.currency.format(released.amount),
        }),
        transaction_id: released.reference.clone(),
    };
    Ok(Applied {
        hold_id: Some(hold_id),
        events: vec![OutgoingMessage::event_of(
            wire::event::FUNDS_RELEASED,
            &event,
        )],
        ..Applied::default()
    })
}

pub(super) async fn post(
    conn: &mut PgConnection,
    command: &pb::PostTransferCommand,
    log: &CommandLog,
    now: DateTime<Utc>,
) -> Result<Applied, ApiError> {
    let hold_id = log
        .reserved_hold(&command.reserve_command_id)
        .flatten()
        .ok_or_else(|| {
            ApiError::failed_precondition(
                reason::NOTHING_RESERVED,
                "no hold was placed for this transfer",
            )
        })?;
    let credit = match command.destination_account_id.as_str() {
        // A withdrawal credits the settlement account.
        "" => ledger::Credit::Settlement,
        destination => ledger::Credit::Account(parse_uuid("destination_account_id", destination)?),
    };
    let source = parse_uuid("source_account_id", &command.source_account_id)?;
    let journal =
        ledger::capture(conn, hold_id, source, credit, &command.transaction_id, now).await?;
    let mut applied = posted(journal, &command.transaction_id);
    applied.hold_id = Some(hold_id);
    Ok(applied)
}

/// The `account.journal.posted` event of a journal, schema version 2: each
/// entry's id and account sequence, the journal's ledger sequence and post
/// time, so a projection can order, deduplicate and reconcile what it applies.
pub(super) fn posted(journal: Journal, transaction_id: &str) -> Applied {
    let event = pb::JournalPostedEvent {
        journal_id: journal.journal_id.to_string(),
        kind: journal.kind.as_str().to_owned(),
        currency: journal
            .entries
            .first()
            .map(|e| e.currency.code().to_owned())
            .unwrap_or_default(),
        entries: journal
            .entries
            .iter()
            .map(|entry| {
                let signed = match entry.direction {
                    Direction::Debit => -entry.amount,
                    Direction::Credit => entry.amount,
                };
                pb::PostedEntry {
                    account_id: entry.account_id.to_string(),
                    amount: entry.currency.format(signed),
                    balance_after: entry.currency.format(entry.balance_after),
                    entry_id: entry.entry_id.to_string(),
                    account_seq: entry.account_seq,
                }
            })
            .collect(),
        transaction_id: transaction_id.to_owned(),
        ledger_seq: journal.ledger_seq,
        post_time: Some(to_timestamp(journal.created_at)),
    };
    Applied {
        journal_id: Some(journal.journal_id),
        events: vec![
            OutgoingMessage::event_of(wire::event::JOURNAL_POSTED, &event).with_schema_version(2),
        ],
        ..Applied::default()
    }
}
