//! AIP-158 pagination: `page_size` (default 50, max 100) and opaque page
//! tokens. A token carries the cursor and a digest of the filters it was issued
//! for, so it cannot be replayed against another query.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 100;

/// A validated page request: how many rows and where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: i64,
    /// The last row of the previous page, if any.
    pub after: Option<String>,
}

impl Page {
    /// Validates `page_size` and `page_token` for a query whose filters are
    /// summarized by `filter` (any stable string).
    pub fn parse(page_size: i32, page_token: &str, filter: &str) -> Result<Self, ApiError> {
        if page_size < 0 {
            return Err(ApiError::invalid_field("page_size", "must not be negative"));
        }
        let size = match i64::from(page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode(page_token, filter).ok_or_else(|| {
                ApiError::invalid_field("page_token", "is not a token issued for this query")
            })?)
        };
        Ok(Self { size, after })
    }

    /// How many rows to fetch: one more than the page, to learn whether a
    /// next page exists.
    pub fn fetch_limit(&self) -> i64 {
        self.size + 1
    }

    /// Trims `rows` to the page and returns the token of the next page.
    pub fn finish<T>(
        &self,
        rows: &mut Vec<T>,
        cursor: impl Fn(&T) -> String,
        filter: &str,
    ) -> String {
        if rows.len() as i64 <= self.size {
            return String::new();
        }
        rows.truncate(self.size as usize);
        rows.last()
            .map(|last| encode(&cursor(last), filter))
            .unwrap_or_default()
    }
}

fn digest(filter: &str) -> String {
    hex::encode(&Sha256::digest(filter.as_bytes())[..8])
}

fn encode(cursor: &str, filter: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1|{}|{cursor}", digest(filter)))
}

fn decode(token: &str, filter: &str) -> Option<String> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let mut parts = raw.splitn(3, '|');
    let (version, issued_for, cursor) = (parts.next()?, parts.next()?, parts.next()?);
    (version == "v1" && issued_for == digest(filter)).then(|| cursor.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_page_size_means_the_default_and_a_large_one_is_capped() {
        assert_eq!(Page::parse(0, "", "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(1000, "", "").unwrap().size, MAX_PAGE_SIZE);
        assert!(Page::parse(-1, "", "").is_err());
    }

    #[test]
    fn a_token_leads_to_the_row_after_the_last_one_returned() {
        let page = Page::parse(2, "", "status=any").unwrap();
        let mut rows = vec!["a", "b", "c"];
        let token = page.finish(&mut rows, |row| row.to_string(), "status=any");
        assert_eq!(rows, ["a", "b"]);
        let next = Page::parse(2, &token, "status=any").unwrap();
        assert_eq!(next.after.as_deref(), Some("b"));
    }

    #[test]
    fn the_last_page_has_no_next_token() {
        let page = Page::parse(5, "", "").unwrap();
        let mut rows = vec![1, 2];
        assert_eq!(page.finish(&mut rows, |row| row.to_string(), ""), "");
    }

    #[test]
    fn a_token_is_refused_with_other_filters_or_when_forged() {
        let page = Page::parse(1, "", "status=pending").unwrap();
        let mut rows = vec![1, 2];
        let token = page.finish(&mut rows, |row| row.to_string(), "status=pending");
        assert!(Page::parse(1, &token, "status=verified").is_err());
        assert!(Page::parse(1, "not-a-token", "status=pending").is_err());
    }
}
