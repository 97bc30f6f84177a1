//! The commands of a batch applied as sets: its transfer posts captured in
//! one statement ([`ledger::capture_batch`]), its reserves placed in one
//! ([`holds::place_holds`]), each set at the turn of its first member.
//!
//! Only commands whose outcome no other command of the batch can change
//! join a set, each the first of its command id, new to the log, with
//! fields that parse:
//! - a transfer post (not a withdrawal, whose settlement account may not
//!   exist yet) whose reserve placed a hold before this batch and is named
//!   by no other command of the batch (no release of that hold, no second
//!   post of it). Its checks then read nothing another command of the batch
//!   writes. Running the posts at the first one's turn moves the later ones
//!   ahead of the commands in between, which touch other holds: a reserve
//!   or a deposit among those sees the posts' credits sooner, as it would
//!   had those sagas' posts arrived a moment earlier;
//! - a reserve whose account no other command of the batch touches, and
//!   that no release of the batch names (a compensation that overtook it).
//!
//! A set needs two members; a command outside the sets runs on its own at
//! its turn, as before.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::effects::{parse_money, posted, reserved};
use super::*;

/// The batch's sets, and their members' outcomes once applied.
#[derive(Default)]
pub(super) struct Together {
    /// Posts by batch index: hold, source, destination.
    posts: BTreeMap<usize, (Uuid, Uuid, Uuid)>,
    /// Reserves by batch index: account, currency, amount.
    reserves: BTreeMap<usize, (Uuid, Currency, Decimal)>,
    outcomes: HashMap<usize, Result<Applied, ApiError>>,
}

/// The sets of `decoded`, given what `log` holds and the amount `limits`.
pub(super) fn plan(decoded: &[Decoded<'_>], log: &CommandLog, limits: AmountLimits) -> Together {
    // The distinct commands that name each reserve (its own id included),
    // and how many commands touch each account.
    let mut named: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut touches: HashMap<&str, usize> = HashMap::new();
    for d in decoded {
        let command_id = d.command.ids().0;
        let (reserve, accounts) = match &d.command {
            Command::Reserve(c) => (Some(command_id), [Some(&c.account_id), None]),
            Command::Release(c) => (Some(&*c.reserve_command_id), [Some(&c.account_id), None]),
            Command::Post(c) => (
                Some(&*c.reserve_command_id),
                [Some(&c.source_account_id), Some(&c.destination_account_id)],
            ),
            Command::Deposit(c) => (None, [Some(&c.account_id), None]),
        };
        if let Some(reserve) = reserve {
            named.entry(reserve).or_default().insert(command_id);
        }
        for account in accounts.into_iter().flatten() {
            *touches.entry(account.as_str()).or_default() += 1;
        }
    }
    let alone = |reserve: &str| named.get(reserve).map(HashSet::len) == Some(1);
    let mut seen = HashSet::new();
    let mut together = Together::default();
    for d in decoded {
        let command_id = d.command.ids().0;
        if !seen.insert(command_id) || log.handled(command_id) {
            continue;
        }
        match &d.command {
            Command::Post(c) if alone(&c.reserve_command_id) => {
                let Some(Some(hold_id)) = log.reserved_hold(&c.reserve_command_id) else {
                    continue;
                };
                if let (Ok(source), Ok(destination)) = (
                    Uuid::parse_str(&c.source_account_id),
                    Uuid::parse_str(&c.destination_account_id),
                ) && source != destination
                {
                    together
                        .posts
                        .insert(d.index, (hold_id, source, destination));
                }
            }
            Command::Reserve(c)
                if alone(command_id) && touches.get(c.account_id.as_str()) == Some(&1) =>
            {
                if let (Ok(account_id), Ok((currency, amount))) = (
                    Uuid::parse_str(&c.account_id),
                    parse_money(c.amount.as_ref(), limits),
                ) {
                    together
                        .reserves
                        .insert(d.index, (account_id, currency, amount));
                }
            }
            _ => {}
        }
    }
    if together.posts.len() < 2 {
        together.posts.clear();
    }
    if together.reserves.len() < 2 {
        together.reserves.clear();
    }
    together
}

impl Together {
    /// The outcome of `d` if it is a member of a set (applying the set at
    /// its first member's turn), or `None` for a command that is not.
    pub(super) async fn take(
        &mut self,
        tx: &mut PgConnection,
        d: &Decoded<'_>,
        decoded: &[Decoded<'_>],
        now: DateTime<Utc>,
    ) -> Result<Option<Result<Applied, ApiError>>, BatchError> {
        if first(&self.posts, d.index) {
            self.capture(tx, decoded, now).await.map_err(whole)?;
        } else if first(&self.reserves, d.index) {
            self.place(tx, decoded, now).await.map_err(whole)?;
        } else if !self.posts.contains_key(&d.index) && !self.reserves.contains_key(&d.index) {
            return Ok(None);
        }
        let outcome = self.outcomes.remove(&d.index).ok_or_else(|| {
            BatchError::at(
                d.index,
                HandlerError::transient(anyhow!("command {} applied twice", d.command.ids().0)),
            )
        })?;
        Ok(Some(outcome))
    }

    /// Captures the posts' holds.
    async fn capture(
        &mut self,
        tx: &mut PgConnection,
        decoded: &[Decoded<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let members: Vec<(usize, &pb::PostTransferCommand)> = self
            .posts
            .keys()
            .filter_map(|index| match &decoded[*index].command {
                Command::Post(c) => Some((*index, c)),
                _ => None,
            })
            .collect();
        let captures: Vec<ledger::Capture<'_>> = members
            .iter()
            .map(|(index, c)| {
                let (hold_id, source, destination) = self.posts[index];
                ledger::Capture {
                    hold_id,
                    source,
                    destination,
                    reference: &c.transaction_id,
                }
            })
            .collect();
        let journals = ledger::capture_batch(tx, &captures, now).await?;
        for ((index, c), journal) in members.iter().zip(journals) {
            let (hold_id, _, _) = self.posts[index];
            let outcome = journal.map(|journal| {
                let mut applied = posted(journal, &c.transaction_id);
                applied.hold_id = Some(hold_id);
                applied
            });
            self.outcomes.insert(*index, outcome);
        }
        Ok(())
    }

    /// Places the reserves' holds.
    async fn place(
        &mut self,
        tx: &mut PgConnection,
        decoded: &[Decoded<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let members: Vec<(usize, &pb::ReserveFundsCommand)> = self
            .reserves
            .keys()
            .filter_map(|index| match &decoded[*index].command {
                Command::Reserve(c) => Some((*index, c)),
                _ => None,
            })
            .collect();
        let reserves: Vec<holds::Reserve<'_>> = members
            .iter()
            .map(|(index, c)| {
                let (account_id, currency, amount) = self.reserves[index];
                holds::Reserve {
                    command_id: &c.command_id,
                    hold_id: Uuid::now_v7(),
                    account_id,
                    currency,
                    amount,
                    reference: &c.transaction_id,
                }
            })
            .collect();
        let placed = holds::place_holds(tx, &reserves, now + MAX_HOLD_TTL, now).await?;
        for ((index, c), outcome) in members.iter().zip(placed) {
            let (account_id, _, _) = self.reserves[index];
            let outcome = outcome.and_then(|outcome| reserved(outcome, account_id, c));
            self.outcomes.insert(*index, outcome);
        }
        Ok(())
    }
}

/// Whether `index` is the first member of `set`, at whose turn it runs.
fn first<T>(set: &BTreeMap<usize, T>, index: usize) -> bool {
    set.keys().next() == Some(&index)
}

/// A set's statement failed: the batch is redone one command at a time.
fn whole(error: ApiError) -> BatchError {
    BatchError::whole(HandlerError::transient(anyhow!(error.to_string())))
}
