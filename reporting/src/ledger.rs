//! The ledger as the account service serves it over gRPC (never SQL): the
//! source a rebuild reads and a reconciliation compares with. Read only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::auth::{AuthedChannel, Credentials};
use corebank_platform::tenancy::Tenancy;
use corebank_platform::time::{from_timestamp, to_timestamp};
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use rust_decimal::Decimal;
use tonic::transport::Endpoint;
use uuid::Uuid;

use crate::domain::reconcile::{AccountFigures, CurrencyFigures, EntryFigures, Figures};
use crate::domain::{Direction, PostedEntry};

/// How long one call to the account service may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Entries per page when reading the ledger.
pub const PAGE_SIZE: i32 = 1000;

/// A lazily connected, read-only client of the ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    client: AccountServiceClient<AuthedChannel>,
}

/// The ledger's figures as of one sequence.
#[derive(Debug, Clone)]
pub struct LedgerFigures {
    pub as_of_ledger_seq: i64,
    pub head_ledger_seq: i64,
    pub figures: Figures,
}

/// One page of ledger entries.
#[derive(Debug, Clone)]
pub struct EntryPage {
    pub entries: Vec<PostedEntry>,
    pub next_page_token: String,
    pub head_ledger_seq: i64,
}

fn unavailable(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            ApiError::unavailable(format!(
                "the ledger (account service) did not answer: {}",
                status.message()
            ))
        }
        _ => ApiError::from_status(&status),
    }
}

fn parse_uuid(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("the ledger sent {what} {text:?}")))
}

fn parse_decimal(text: &str, what: &str) -> Result<Decimal, ApiError> {
    text.parse()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("the ledger sent {what} {text:?}")))
}

fn direction(value: i32) -> Result<Direction, ApiError> {
    match pb::EntryDirection::try_from(value) {
        Ok(pb::EntryDirection::Debit) => Ok(Direction::Debit),
        Ok(pb::EntryDirection::Credit) => Ok(Direction::Credit),
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "the ledger sent entry direction {value}"
        ))),
    }
}

fn kind(value: i32) -> &'static str {
    match pb::JournalKind::try_from(value) {
        Ok(pb::JournalKind::Transfer) => "transfer",
        Ok(pb::JournalKind::Deposit) => "deposit",
        Ok(pb::JournalKind::Withdrawal) => "withdrawal",
        _ => "unspecified",
    }
}

/// A ledger entry as the projection takes it.
pub fn posted_entry(entry: &pb::LedgerEntry) -> Result<PostedEntry, ApiError> {
    Ok(PostedEntry {
        entry_id: parse_uuid(&entry.entry_id, "entry_id")?,
        journal_id: parse_uuid(&entry.journal_id, "journal_id")?,
        ledger_seq: entry.ledger_seq,
        account_id: parse_uuid(&entry.account_id, "account_id")?,
        account_seq: entry.account_seq,
        counterparty_account_id: match entry.counterparty_account_id.as_str() {
            "" => None,
            text => Some(parse_uuid(text, "counterparty_account_id")?),
        },
        currency: entry.currency.clone(),
        direction: direction(entry.direction)?,
        amount: parse_decimal(&entry.amount, "amount")?,
        ledger_balance_after: parse_decimal(&entry.balance_after, "balance_after")?,
        kind: kind(entry.kind).to_owned(),
        transaction_id: entry.transaction_id.clone(),
        post_time: entry
            .post_time
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the ledger sent no post_time")))?,
    })
}

impl Ledger {
    /// Connects on first use, so reporting starts even while the account
    /// service is down.
    pub fn connect_lazy(endpoint: &str, credentials: &Credentials) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT);
        let channel = credentials.connect_lazy(endpoint)?;
        Ok(Self {
            client: AccountServiceClient::new(channel),
        })
    }

    /// Whether `tenancy` reaches `account_id` (staff and services reach
    /// every account without asking; an unknown account is reached by none).
    pub async fn reaches(&self, tenancy: &Tenancy, account_id: Uuid) -> Result<bool, ApiError> {
        if *tenancy == Tenancy::All {
            return Ok(true);
        }
        let request = pb::GetAccountRequest {
            account_id: account_id.to_string(),
        };
        match self.client.clone().get_account(request).await {
            Ok(account) => {
                let owner = account.into_inner().partner_id;
                Ok(tenancy.reaches(Some(owner.as_str()).filter(|owner| !owner.is_empty())))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(ApiError::from_status(&status)),
        }
    }

    /// Per account and per currency, as of `as_of` (0: the head), of entries
    /// posted in `window` when given.
    #[tracing::instrument(skip(self), err)]
    pub async fn figures(
        &self,
        as_of: i64,
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<LedgerFigures, ApiError> {
        let mut figures = Figures::default();
        let mut page_token = String::new();
        let mut resolved = None;
        loop {
            let summary = self
                .client
                .clone()
                .get_ledger_summary(pb::GetLedgerSummaryRequest {
                    // Every page as of the sequence the first page resolved.
                    as_of_ledger_seq: resolved.map_or(as_of, |(as_of, _)| as_of),
                    post_time_start: window.map(|(start, _)| to_timestamp(start)),
                    post_time_end: window.map(|(_, end)| to_timestamp(end)),
                    page_size: PAGE_SIZE,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(unavailable)?
                .into_inner();
            resolved.get_or_insert((summary.as_of_ledger_seq, summary.head_ledger_seq));
            for account in &summary.accounts {
                figures.accounts.insert(
                    parse_uuid(&account.account_id, "account_id")?,
                    AccountFigures {
                        currency: account.currency.clone(),
                        entry_count: account.entry_count,
                        balance: parse_decimal(&account.balance, "balance")?,
                    },
                );
            }
            for currency in &summary.currencies {
                figures.currencies.insert(
                    currency.currency.clone(),
                    CurrencyFigures {
                        debits: parse_decimal(&currency.debits, "debits")?,
                        credits: parse_decimal(&currency.credits, "credits")?,
                        entry_count: currency.entry_count,
                    },
                );
            }
            if summary.next_page_token.is_empty() {
                break;
            }
            page_token = summary.next_page_token;
        }
        let (as_of_ledger_seq, head_ledger_seq) = resolved.unwrap_or((as_of, as_of));
        Ok(LedgerFigures {
            as_of_ledger_seq,
            head_ledger_seq,
            figures,
        })
    }

    /// One page of entries in ledger order, optionally of one account and up
    /// to a sequence (0: the head).
    pub async fn page(
        &self,
        account_id: Option<Uuid>,
        up_to: i64,
        page_token: &str,
    ) -> Result<EntryPage, ApiError> {
        let page = self
            .client
            .clone()
            .list_ledger_entries(pb::ListLedgerEntriesRequest {
                after_ledger_seq: 0,
                up_to_ledger_seq: up_to,
                account_id: account_id.map(|id| id.to_string()).unwrap_or_default(),
                page_size: PAGE_SIZE,
                page_token: page_token.to_owned(),
            })
            .await
            .map_err(unavailable)?
            .into_inner();
        Ok(EntryPage {
            entries: page
                .entries
                .iter()
                .map(posted_entry)
                .collect::<Result<_, _>>()?,
            next_page_token: page.next_page_token,
            head_ledger_seq: page.head_ledger_seq,
        })
    }

    /// Every entry of one account up to `up_to`, to compare one by one.
    pub async fn entries_of(
        &self,
        account_id: Uuid,
        up_to: i64,
    ) -> Result<Vec<EntryFigures>, ApiError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.page(Some(account_id), up_to, &token).await?;
            out.extend(page.entries.into_iter().map(|entry| EntryFigures {
                entry_id: entry.entry_id,
                account_id: entry.account_id,
                currency: entry.currency,
                direction: entry.direction,
                amount: entry.amount,
            }));
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }
}
