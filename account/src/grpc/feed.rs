//! `ListLedgerEntries` and `GetLedgerSummary`: the read-only ledger feed
//! reporting rebuilds and reconciles from. Validation at the edge (every bad
//! field named), the SQL in `store::feed`, the rules in `domain::feed`.

use corebank_platform::paging::Page;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;

use super::convert::{ledger_entry_to_proto, ledger_summary_to_proto, parse_id, parse_time};
use super::{AccountApi, present};
use crate::domain::feed::{self, EntryCursor, EntryQuery, SummaryCursor, SummaryQuery};

/// The cursor in a page token issued for `filter`, if a token was given.
fn cursor<T>(
    page_token: &str,
    filter: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    // Decodes and checks the token's binding to the filters; the size is ours.
    let Some(text) = Page::parse(0, page_token, filter)?.after else {
        return Ok(None);
    };
    parse(&text).map(Some).ok_or_else(|| {
        ApiError::invalid_field("page_token", "is not a token issued for this query")
    })
}

impl AccountApi {
    pub(super) async fn ledger_entries(
        &self,
        request: pb::ListLedgerEntriesRequest,
    ) -> Result<pb::ListLedgerEntriesResponse, ApiError> {
        let mut violations = Violations::default();
        let after = violations.take(
            "after_ledger_seq",
            feed::parse_seq(request.after_ledger_seq),
        );
        let up_to = violations.take(
            "up_to_ledger_seq",
            feed::parse_seq(request.up_to_ledger_seq),
        );
        let account_id = if request.account_id.is_empty() {
            Some(None)
        } else {
            violations
                .take("account_id", parse_id(&request.account_id))
                .map(Some)
        };
        let size = violations.take("page_size", feed::page_size(request.page_size));
        violations.into_result()?;
        let after = present(after, "after_ledger_seq")?;
        let up_to = present(up_to, "up_to_ledger_seq")?;
        let account_id = present(account_id, "account_id")?;
        let page = Page {
            size: present(size, "page_size")?,
            after: None,
        };
        let filter = EntryQuery::filter(after, up_to, account_id);
        let cursor = cursor(&request.page_token, &filter, EntryCursor::parse)?;
        let mut read = self
            .store
            .list_ledger_entries(&EntryQuery {
                after_ledger_seq: after,
                up_to_ledger_seq: up_to,
                account_id,
                cursor,
                limit: page.fetch_limit(),
            })
            .await?;
        let pinned = read.up_to_ledger_seq;
        let next_page_token = page.finish(
            &mut read.entries,
            |entry| entry.position(pinned).encode(),
            &filter,
        );
        Ok(pb::ListLedgerEntriesResponse {
            entries: read.entries.iter().map(ledger_entry_to_proto).collect(),
            next_page_token,
            head_ledger_seq: read.head_ledger_seq,
        })
    }

    pub(super) async fn ledger_summary(
        &self,
        request: pb::GetLedgerSummaryRequest,
    ) -> Result<pb::LedgerSummary, ApiError> {
        let mut violations = Violations::default();
        let as_of = violations.take(
            "as_of_ledger_seq",
            feed::parse_seq(request.as_of_ledger_seq),
        );
        let start = violations.take(
            "post_time_start",
            parse_time(request.post_time_start.as_ref()),
        );
        let end = violations.take("post_time_end", parse_time(request.post_time_end.as_ref()));
        if let (Some(Some(start)), Some(Some(end))) = (start, end) {
            violations.check(
                start <= end,
                "post_time_end",
                "must not be before post_time_start",
            );
        }
        let size = violations.take("page_size", feed::page_size(request.page_size));
        violations.into_result()?;
        let as_of = present(as_of, "as_of_ledger_seq")?;
        let start = present(start, "post_time_start")?;
        let end = present(end, "post_time_end")?;
        let page = Page {
            size: present(size, "page_size")?,
            after: None,
        };
        let filter = SummaryQuery::filter(as_of, start, end);
        let cursor = cursor(&request.page_token, &filter, SummaryCursor::parse)?;
        let mut summary = self
            .store
            .ledger_summary(&SummaryQuery {
                as_of_ledger_seq: as_of,
                posted_from: start,
                posted_before: end,
                cursor,
                limit: page.fetch_limit(),
            })
            .await?;
        let pinned = summary.as_of_ledger_seq;
        let next_page_token = page.finish(
            &mut summary.accounts,
            |account| {
                SummaryCursor {
                    as_of: pinned,
                    account_id: account.account_id,
                }
                .encode()
            },
            &filter,
        );
        Ok(ledger_summary_to_proto(&summary, next_page_token))
    }
}
