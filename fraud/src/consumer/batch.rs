//! A batch of screen commands screened as a set: three statements for the
//! batch (record every movement, count every movement's features, store
//! every decision with every reply and event) instead of three for each.
//!
//! Each screen decides what it would have decided had the batch been
//! screened one at a time in its order: the subjects are all locked before
//! any movement is recorded, and a movement's features leave out the
//! batch's movements after it. A batch this path cannot take as a set (a
//! command that does not parse or names no valid movement, a command or
//! movement twice) is screened one message at a time, as is any batch after
//! an error (the runner's fallback).

use std::collections::HashSet;

use corebank_platform::messaging::{BatchError, HandlerError, IncomingMessage, one_by_one};
use corebank_proto::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ScreenHandler, decide, decode, movement, replay, reply_message};
use crate::store::decisions;
use crate::store::features::{self, Movement};
use crate::store::profiles::Party;

/// Screens `messages` as a set when it can, else one at a time.
pub(super) async fn screen_batch(
    handler: &ScreenHandler,
    tx: &mut PgConnection,
    messages: &[&IncomingMessage],
) -> Result<(), BatchError> {
    match commands(messages) {
        Some(commands) if commands.len() > 1 => as_set(handler, tx, messages, &commands).await,
        _ => one_by_one(handler, tx, messages).await,
    }
}

/// A parsed screen command with its saga's id and its movement.
struct Command {
    command: pb::ScreenTransactionCommand,
    saga_id: Uuid,
    movement: Movement,
}

/// Every message's command, when each parses, names a valid movement, and
/// no command id or movement repeats in the batch.
fn commands(messages: &[&IncomingMessage]) -> Option<Vec<Command>> {
    let mut command_ids = HashSet::with_capacity(messages.len());
    let mut transaction_ids = HashSet::with_capacity(messages.len());
    messages
        .iter()
        .map(|message| {
            let (command, saga_id) = decode(message).ok()?;
            let movement = movement(&command).ok()?;
            let fresh = command_ids.insert(command.command_id.clone())
                && transaction_ids.insert(movement.transaction_id);
            fresh.then_some(Command {
                command,
                saga_id,
                movement,
            })
        })
        .collect()
}

async fn as_set(
    handler: &ScreenHandler,
    tx: &mut PgConnection,
    messages: &[&IncomingMessage],
    commands: &[Command],
) -> Result<(), BatchError> {
    let started = std::time::Instant::now();
    let now = handler.clock.now();
    let screens: Vec<(&Movement, &str)> = commands
        .iter()
        .map(|command| (&command.movement, command.command.command_id.as_str()))
        .collect();
    let recorded = features::record_batch(tx, &screens, now)
        .await
        .map_err(BatchError::whole)?;
    // Commands decided before (redeliveries) are answered from their
    // decision; the rest are screened.
    let fresh: Vec<(&Movement, &[Party])> = commands
        .iter()
        .zip(&recorded.screens)
        .filter(|(_, (decided, _))| !decided)
        .map(|(command, (_, parties))| (&command.movement, parties.as_slice()))
        .collect();
    let mut snapshots = match fresh.is_empty() {
        true => Vec::new(),
        false => features::snapshot_batch(tx, &fresh, &recorded.rules, now)
            .await
            .map_err(BatchError::whole)?,
    }
    .into_iter();
    let mut rows = Vec::new();
    let mut outgoing = Vec::new();
    let mut screened_count = 0;
    for (index, ((command, (decided, _)), message)) in commands
        .iter()
        .zip(&recorded.screens)
        .zip(messages)
        .enumerate()
    {
        let at = |error: HandlerError| BatchError::at(index, error);
        let reply = match decided {
            true => {
                let decision = decisions::by_command(tx, &command.command.command_id)
                    .await
                    .map_err(|error| at(error.into()))?
                    .ok_or_else(|| {
                        at(HandlerError::transient(anyhow::anyhow!(
                            "decided command has no decision"
                        )))
                    })?;
                replay(tx, &decision).await.map_err(at)?
            }
            false => {
                let snapshot = snapshots.next().ok_or_else(|| {
                    at(HandlerError::transient(anyhow::anyhow!(
                        "no features for a screen"
                    )))
                })?;
                let screened = decide(
                    tx,
                    &command.command,
                    command.saga_id,
                    &command.movement,
                    &recorded.rules,
                    snapshot,
                    handler.review_deadline,
                    now,
                    message,
                )
                .await
                .map_err(at)?;
                screened_count += 1;
                outgoing.extend(screened.events);
                rows.extend(screened.decision);
                screened.reply
            }
        };
        outgoing.push(reply_message(reply, command.saga_id, Some(message)));
    }
    decisions::insert_all_sending(tx, &rows, outgoing)
        .await
        .map_err(BatchError::whole)?;
    // Each screen took the batch's time.
    let elapsed = started.elapsed().as_secs_f64();
    for _ in 0..screened_count {
        metrics::histogram!("corebank_fraud_screen_seconds").record(elapsed);
    }
    Ok(())
}
