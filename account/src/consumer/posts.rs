//! The transfer posts of a batch captured together, in one statement
//! ([`ledger::capture_batch`]), at the turn of the first of them.
//!
//! Only posts whose outcome cannot depend on another command of the batch
//! join: a transfer (not a withdrawal, whose settlement account may not
//! exist yet) whose command is new to the log, whose reserve placed a hold
//! before this batch, and whose reserve no other command of the batch
//! names (no release of the same hold, no second post of it). Their checks
//! then read nothing another command of the batch writes, so each gets the
//! outcome it would have had on its own. Running them at the first one's
//! turn moves the later ones ahead of the commands in between, which touch
//! other holds: a reserve or a deposit among those sees the posts' credits
//! sooner, as it would had those sagas' posts arrived a moment earlier.

use std::collections::{HashMap, HashSet};

use super::*;

/// The batch's grouped posts, and their outcomes once captured.
#[derive(Default)]
pub(super) struct Posts {
    /// The batch index of each member, with its hold, source and
    /// destination.
    members: HashMap<usize, (Uuid, Uuid, Uuid)>,
    /// Each member's outcome, once the group ran.
    outcomes: HashMap<usize, Result<Journal, ApiError>>,
    ran: bool,
}

/// The posts of `decoded` that may be captured together (none unless at
/// least two may), with the holds `log` says their reserves placed.
pub(super) fn plan<'m>(decoded: &[Decoded<'m>], log: &CommandLog) -> Posts {
    // How many distinct commands of the batch name each reserve, its own
    // command id included.
    let mut named: HashMap<&str, HashSet<&str>> = HashMap::new();
    for d in decoded {
        let command_id = d.command.ids().0;
        let reserve = match &d.command {
            Command::Reserve(_) => Some(command_id),
            other => other.reserve_command_id(),
        };
        if let Some(reserve) = reserve {
            named.entry(reserve).or_default().insert(command_id);
        }
    }
    let mut seen = HashSet::new();
    let mut members = HashMap::new();
    for d in decoded {
        let first = seen.insert(d.command.ids().0);
        let Command::Post(command) = &d.command else {
            continue;
        };
        if !first
            || log.handled(&command.command_id)
            || named
                .get(command.reserve_command_id.as_str())
                .map(HashSet::len)
                != Some(1)
        {
            continue;
        }
        let Some(Some(hold_id)) = log.reserved_hold(&command.reserve_command_id) else {
            continue;
        };
        let (Ok(source), Ok(destination)) = (
            Uuid::parse_str(&command.source_account_id),
            Uuid::parse_str(&command.destination_account_id),
        ) else {
            continue;
        };
        if source == destination {
            continue;
        }
        members.insert(d.index, (hold_id, source, destination));
    }
    if members.len() < 2 {
        members.clear();
    }
    Posts {
        members,
        ..Posts::default()
    }
}

impl Posts {
    /// The outcome of `d`'s post if it is a member (capturing every member
    /// at the first one's turn), or `None` for a command that is not.
    pub(super) async fn take(
        &mut self,
        tx: &mut PgConnection,
        d: &Decoded<'_>,
        decoded: &[Decoded<'_>],
        now: DateTime<Utc>,
    ) -> Result<Option<Result<Applied, ApiError>>, BatchError> {
        if !self.members.contains_key(&d.index) {
            return Ok(None);
        }
        if !self.ran {
            self.ran = true;
            let mut indexes: Vec<usize> = self.members.keys().copied().collect();
            indexes.sort_unstable();
            let captures: Vec<ledger::Capture<'_>> = indexes
                .iter()
                .map(|index| {
                    let (hold_id, source, destination) = self.members[index];
                    let reference = match &decoded[*index].command {
                        Command::Post(command) => command.transaction_id.as_str(),
                        _ => "",
                    };
                    ledger::Capture {
                        hold_id,
                        source,
                        destination,
                        reference,
                    }
                })
                .collect();
            let outcomes = ledger::capture_batch(tx, &captures, now)
                .await
                .map_err(|error| {
                    BatchError::whole(HandlerError::transient(anyhow!(error.to_string())))
                })?;
            self.outcomes = indexes.into_iter().zip(outcomes).collect();
        }
        let Command::Post(command) = &d.command else {
            return Ok(None);
        };
        let outcome = self.outcomes.remove(&d.index).ok_or_else(|| {
            BatchError::at(
                d.index,
                HandlerError::transient(anyhow!("post {} captured twice", command.command_id)),
            )
        })?;
        let (hold_id, _, _) = self.members[&d.index];
        Ok(Some(outcome.map(|journal| {
            let mut applied = effects::posted(journal, &command.transaction_id);
            applied.hold_id = Some(hold_id);
            applied
        })))
    }
}
