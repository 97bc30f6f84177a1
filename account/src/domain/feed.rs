//! The ledger as a read-only feed for reporting: every entry in ledger order
//! (journal `ledger_seq`, then account id) and per-account and per-currency
//! totals as of one ledger sequence. Pure: which entries a page reads, where
//! the next page starts, and how a paged read stays on one ledger position.
//!
//! A paged read resolves "the head" once, on its first page, and carries the
//! resolved sequence in its page token, so every page of one listing or one
//! summary counts the same journals even while new ones are posted.

use chrono::{DateTime, Utc};
use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{Direction, JournalKind};

/// Feed pages are larger than the API's usual: reporting reads the whole ledger.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// The most rows one feed page holds.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The rows one feed page holds for a requested `page_size` (0: the default).
pub fn page_size(requested: i32) -> Result<i64, &'static str> {
    match i64::from(requested) {
        size if size < 0 => Err("must not be negative"),
        0 => Ok(DEFAULT_PAGE_SIZE),
        size => Ok(size.min(MAX_PAGE_SIZE)),
    }
}

/// A ledger sequence bound given by a request: 0 means the head.
pub fn parse_seq(value: i64) -> Result<i64, &'static str> {
    if value < 0 {
        return Err("must not be negative");
    }
    Ok(value)
}

/// The upper bound a page reads to: the one pinned by an earlier page, else
/// the one asked for, else (0) the head.
pub fn resolve_up_to(asked: i64, pinned: Option<i64>, head: i64) -> i64 {
    match (pinned, asked) {
        (Some(pinned), _) => pinned,
        (None, 0) => head,
        (None, asked) => asked,
    }
}

/// The sequence a summary is as of: pinned by an earlier page, else the one
/// asked for but never past the head (figures as of a later sequence would
/// be the head's now and could still change), the head for 0.
pub fn resolve_as_of(asked: i64, pinned: Option<i64>, head: i64) -> i64 {
    match (pinned, asked) {
        (Some(pinned), _) => pinned,
        (None, 0) => head,
        (None, asked) => asked.min(head),
    }
}

/// One ledger entry with its journal's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub entry_id: Uuid,
    pub journal_id: Uuid,
    pub ledger_seq: i64,
    pub account_id: Uuid,
    pub account_seq: i64,
    /// The other account of a two-legged journal.
    pub counterparty_account_id: Option<Uuid>,
    pub currency: Currency,
    pub direction: Direction,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub kind: JournalKind,
    /// The journal's reference: the transaction id of a saga posting.
    pub reference: String,
    /// When the journal was posted.
    pub posted_at: DateTime<Utc>,
}

impl LedgerEntry {
    /// Where the page after this entry starts.
    pub fn position(&self, up_to: i64) -> EntryCursor {
        EntryCursor {
            up_to,
            ledger_seq: self.ledger_seq,
            account_id: self.account_id,
            entry_id: self.entry_id,
        }
    }
}

/// Which entries a ListLedgerEntries page reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryQuery {
    /// Only journals after this sequence.
    pub after_ledger_seq: i64,
    /// Only journals up to this sequence; 0: the head.
    pub up_to_ledger_seq: i64,
    pub account_id: Option<Uuid>,
    /// Where the previous page ended.
    pub cursor: Option<EntryCursor>,
    /// Rows to fetch (one more than the page, to learn if another follows).
    pub limit: i64,
}

impl EntryQuery {
    /// A stable text of the filters, which a page token is bound to.
    pub fn filter(after: i64, up_to: i64, account_id: Option<Uuid>) -> String {
        let account = account_id.map_or_else(|| "*".to_owned(), |id| id.to_string());
        format!("ledger entries after={after} up_to={up_to} account={account}")
    }
}

/// The last entry of a page, in ledger order, and the bound the listing was
/// pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryCursor {
    pub up_to: i64,
    pub ledger_seq: i64,
    pub account_id: Uuid,
    /// Breaks a tie if a journal ever had two entries on one account.
    pub entry_id: Uuid,
}

impl EntryCursor {
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.up_to, self.ledger_seq, self.account_id, self.entry_id
        )
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let cursor = Self {
            up_to: parts.next()?.parse().ok()?,
            ledger_seq: parts.next()?.parse().ok()?,
            account_id: parts.next()?.parse().ok()?,
            entry_id: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// A page of the feed, and the ledger positions it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPage {
    pub entries: Vec<LedgerEntry>,
    /// The bound the page was read up to (the head when 0 was asked).
    pub up_to_ledger_seq: i64,
    /// The highest journal sequence when the page was read.
    pub head_ledger_seq: i64,
}

/// Which entries a summary counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryQuery {
    /// Journals up to this sequence; 0: the head.
    pub as_of_ledger_seq: i64,
    /// Journals posted at or after this time.
    pub posted_from: Option<DateTime<Utc>>,
    /// Journals posted before this time.
    pub posted_before: Option<DateTime<Utc>>,
    pub cursor: Option<SummaryCursor>,
    /// Accounts to fetch (one more than the page).
    pub limit: i64,
}

impl SummaryQuery {
    /// A stable text of the filters, which a page token is bound to.
    pub fn filter(
        as_of: i64,
        posted_from: Option<DateTime<Utc>>,
        posted_before: Option<DateTime<Utc>>,
    ) -> String {
        let time = |time: Option<DateTime<Utc>>| {
            time.map_or_else(|| "*".to_owned(), |time| time.to_rfc3339())
        };
        format!(
            "ledger summary as_of={as_of} from={} before={}",
            time(posted_from),
            time(posted_before)
        )
    }
}

/// The last account of a summary page and the sequence the summary is as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryCursor {
    pub as_of: i64,
    pub account_id: Uuid,
}

impl SummaryCursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.as_of, self.account_id)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (as_of, account_id) = text.split_once(':')?;
        Some(Self {
            as_of: as_of.parse().ok()?,
            account_id: account_id.parse().ok()?,
        })
    }
}

/// One account's counted entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTotals {
    pub account_id: Uuid,
    pub currency: Currency,
    pub entry_count: i64,
    /// Credits minus debits.
    pub balance: Decimal,
    pub last_account_seq: i64,
}

/// One currency's counted entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub currency: Currency,
    pub debits: Decimal,
    pub credits: Decimal,
    pub entry_count: i64,
}

/// A page of per-account totals and every currency's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSummary {
    pub as_of_ledger_seq: i64,
    pub head_ledger_seq: i64,
    pub accounts: Vec<AccountTotals>,
    pub currencies: Vec<CurrencyTotals>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_page_is_a_hundred_by_default_and_a_thousand_at_most() {
        assert_eq!(page_size(0), Ok(100));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(5000), Ok(1000));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn the_first_page_resolves_the_head_and_later_pages_keep_it() {
        assert_eq!(resolve_up_to(0, None, 42), 42);
        assert_eq!(resolve_up_to(7, None, 42), 7);
        assert_eq!(resolve_up_to(0, Some(40), 42), 40);
        assert_eq!(resolve_as_of(0, None, 42), 42);
        assert_eq!(resolve_as_of(50, None, 42), 42);
        assert_eq!(resolve_as_of(10, None, 42), 10);
        assert_eq!(resolve_as_of(0, Some(40), 42), 40);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = EntryCursor {
            up_to: 9,
            ledger_seq: 3,
            account_id: Uuid::now_v7(),
            entry_id: Uuid::now_v7(),
        };
        assert_eq!(EntryCursor::parse(&cursor.encode()), Some(cursor));
        assert_eq!(EntryCursor::parse("9:3:x:y"), None);
        assert_eq!(
            EntryCursor::parse(&format!("{}:extra", cursor.encode())),
            None
        );
        let summary = SummaryCursor {
            as_of: 9,
            account_id: Uuid::now_v7(),
        };
        assert_eq!(SummaryCursor::parse(&summary.encode()), Some(summary));
        assert_eq!(SummaryCursor::parse("nine"), None);
    }

    #[test]
    fn filters_differ_whenever_the_query_does() {
        let account = Some(Uuid::now_v7());
        assert_ne!(
            EntryQuery::filter(0, 0, None),
            EntryQuery::filter(0, 0, account)
        );
        assert_ne!(
            EntryQuery::filter(1, 0, None),
            EntryQuery::filter(0, 1, None)
        );
        let now = Utc::now();
        assert_ne!(
            SummaryQuery::filter(0, Some(now), None),
            SummaryQuery::filter(0, None, Some(now))
        );
    }
}
