//! Holds captured into transfers as a set: every capture of a batch in one
//! statement, each with the outcome [`capture`](super::capture) would have
//! given it, had they come one at a time in the batch's order.

use corebank_platform::db::PlannedPerCall;

use super::capture::{Captured, Capturing, capture_refusal};
use super::*;
use crate::store::one_row_each;

/// One transfer of [`capture_batch`]: the hold to capture, the account it
/// must be on, the account to credit, and the journal's reference.
#[derive(Debug, Clone, Copy)]
pub struct Capture<'a> {
    pub hold_id: Uuid,
    pub source: Uuid,
    pub destination: Uuid,
    pub reference: &'a str,
}

/// Captures every hold of `captures` into a transfer journal, in one
/// statement: the holds are locked in hold id order, then every account
/// they name in account id order; each capture is checked under those
/// locks as [`capture`](super::capture) checks one, and the ones that pass
/// are written. Each account moves once, by what all its captures move;
/// its entries take its sequence numbers and running balances in the
/// batch's order, and the journals their ledger sequence in that order, so
/// the ledger reads as if the captures had come one at a time. A refused
/// capture writes nothing, and is read again to say why.
///
/// The holds must be distinct, and each source distinct from its
/// destination: the caller captures any other one at a time.
#[tracing::instrument(skip_all, fields(captures = captures.len()), err(Debug))]
pub async fn capture_batch(
    conn: &mut PgConnection,
    captures: &[Capture<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Journal, ApiError>>, ApiError> {
    // At the database's microsecond precision, as in `post`.
    let posted_at = now.trunc_subsecs(6);
    let journal_ids: Vec<Uuid> = captures.iter().map(|_| Uuid::now_v7()).collect();
    let entry_ids: Vec<[Uuid; 2]> = captures
        .iter()
        .map(|_| [Uuid::now_v7(), Uuid::now_v7()])
        .collect();
    let rows: Vec<Captured> = sqlx::query_as(
        "with item as (
             select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[],
                                  $6::uuid[], $7::uuid[])
                    with ordinality as i (hold_id, source, destination, reference, journal_id,
                                          debit_id, credit_id, ord)
         ), held as materialized (
             select hold_id, account_id, currency, amount, status, expires_at from hold
              where hold_id in (select hold_id from item)
              order by hold_id for update
         ), accounts as materialized (
             select account_id, currency, status from account
              where account_id in (select source from item union select destination from item)
                and exists (select 1 from held)
              order by account_id for update
         ), checked as materialized (
             select i.*, h.currency, h.amount,
                    coalesce(h.status = 'active' and h.expires_at > $8 and h.account_id = i.source
                             and s.status = 'active' and s.currency = h.currency
                             and d.status = 'active' and d.currency = h.currency, false) as ok
               from item i
               left join held h on h.hold_id = i.hold_id
               left join accounts s on s.account_id = i.source
               left join accounts d on d.account_id = i.destination
         ), captured as (
             update hold h set status = 'captured', journal_id = c.journal_id, updated_at = $8
               from checked c
              where c.ok and h.hold_id = c.hold_id
         ), legs as materialized (
             select c.ord, 0 as leg, c.debit_id as entry_id, c.journal_id, c.source as account_id,
                    c.currency, 'debit' as direction, c.amount, -c.amount as delta,
                    c.amount as released
               from checked c where c.ok
             union all
             select c.ord, 1, c.credit_id, c.journal_id, c.destination, c.currency, 'credit',
                    c.amount, c.amount, 0
               from checked c where c.ok
         ), moved as (
             update account a
                set ledger_balance = a.ledger_balance + m.delta,
                    held_amount = a.held_amount - m.released,
                    last_entry_seq = a.last_entry_seq + m.legs, updated_at = $8
               from (select account_id, sum(delta) as delta, sum(released) as released,
                            count(*) as legs
                       from legs group by account_id) m
              where a.account_id = m.account_id
             returning a.account_id, a.ledger_balance - m.delta as balance_before,
                       a.last_entry_seq - m.legs as seq_before
         ), numbered as materialized (
             select l.ord, l.leg, l.entry_id, l.journal_id, l.account_id, l.currency, l.direction,
                    l.amount,
                    v.balance_before + sum(l.delta) over w as balance_after,
                    v.seq_before + row_number() over w as account_seq
               from legs l join moved v on v.account_id = l.account_id
             window w as (partition by l.account_id order by l.ord, l.leg
                          rows between unbounded preceding and current row)
         ), journals as (
             insert into journal (journal_id, kind, reference, hold_id, created_at)
             select c.journal_id, 'transfer', c.reference, c.hold_id, $8
               from checked c where c.ok
              order by c.ord
             returning journal_id, ledger_seq
         ), entries as (
             insert into entry (entry_id, journal_id, account_id, currency, direction, amount,
                                balance_after, account_seq, created_at)
             select entry_id, journal_id, account_id, currency, direction, amount, balance_after,
                    account_seq, $8
               from numbered
         )
         select c.ok, c.destination as credit_account, c.currency, c.amount,
                d.balance_after as debit_balance, d.account_seq as debit_seq,
                k.balance_after as credit_balance, k.account_seq as credit_seq,
                j.ledger_seq
           from checked c
           left join numbered d on d.ord = c.ord and d.leg = 0
           left join numbered k on k.ord = c.ord and k.leg = 1
           left join journals j on j.journal_id = c.journal_id
          order by c.ord",
    )
    .planned_per_call()
    .bind(captures.iter().map(|c| c.hold_id).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.source).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.destination).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.reference).collect::<Vec<_>>())
    .bind(&journal_ids)
    .bind(entry_ids.iter().map(|ids| ids[0]).collect::<Vec<_>>())
    .bind(entry_ids.iter().map(|ids| ids[1]).collect::<Vec<_>>())
    .bind(posted_at)
    .fetch_all(&mut *conn)
    .await?;
    let rows = one_row_each(rows, captures.len(), "captures")?;
    let mut journals = Vec::with_capacity(captures.len());
    for (index, (capture, row)) in captures.iter().zip(rows).enumerate() {
        let ok = row.ok();
        let capturing = Capturing {
            hold_id: capture.hold_id,
            journal_id: journal_ids[index],
            entry_ids: entry_ids[index],
            source: capture.source,
            kind: JournalKind::Transfer,
            reference: capture.reference,
            posted_at,
        };
        let journal = match row.journal(capturing)? {
            Some(journal) => Ok(journal),
            None if ok => {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "hold {} was captured without its journal",
                    capture.hold_id
                )));
            }
            None => Err(capture_refusal(
                conn,
                capture.hold_id,
                capture.source,
                Credit::Account(capture.destination),
                now,
            )
            .await),
        };
        journals.push(journal);
    }
    Ok(journals)
}
