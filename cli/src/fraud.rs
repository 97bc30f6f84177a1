//! `corebank fraud …`: the analyst's review queue, decisions, alerts, the
//! rule set and the watchlist.
//!
//! A rules file is canonical proto3 JSON: what `corebank fraud rules show
//! --json` prints (a `corebank.v1.RuleSet`; its version, author and time are
//! ignored), or a `corebank.v1.UpdateRuleSetRequest`. So a person edits what
//! the service shows and sends it back. Unknown fields are refused, amounts
//! are decimal strings, durations like `"86400s"`, enums by name
//! (`"RULE_KIND_VELOCITY_COUNT"`, `"FRAUD_ACTION_REVIEW"`).

use anyhow::Context;
use corebank_proto::v1 as pb;
use corebank_proto::v1::fraud_service_client::FraudServiceClient;

use crate::client::{ClientArgs, channel, default_actor};
use crate::exit::bad_input;
use crate::output::{from_json, print};

#[derive(Debug, clap::Args)]
pub struct FraudCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    action: FraudAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReviewStateFilter {
    Open,
    Approved,
    Declined,
    Expired,
}

#[derive(Debug, clap::Subcommand)]
enum FraudAction {
    /// The review queue: open reviews first, soonest deadline first.
    Reviews {
        #[arg(long, value_enum)]
        state: Option<ReviewStateFilter>,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One review: show, approve or decline it.
    Review {
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// The screening decision of a transaction.
    Decision { transaction_id: String },
    /// Alerts raised by alert-only rules.
    Alerts {
        #[arg(long, default_value = "")]
        account_id: String,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// The rule set: show it (or an older version), or set a new version from a file.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Accounts and customers to look at twice.
    Watchlist {
        #[command(subcommand)]
        action: WatchlistAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ReviewAction {
    Show {
        review_id: String,
    },
    /// Let the movement go on.
    Approve(Verdict),
    /// Refuse the movement (the money goes back) and, unless told not to,
    /// put the destination on the watchlist.
    Decline {
        #[command(flatten)]
        verdict: Verdict,
        /// Do not put the destination on the watchlist.
        #[arg(long)]
        no_watchlist: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Verdict {
    review_id: String,
    #[arg(long)]
    reason: String,
    #[arg(long, default_value_t = default_actor())]
    actor: String,
}

#[derive(Debug, clap::Subcommand)]
enum RulesAction {
    Show {
        /// 0 or absent: the active version.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        version: i64,
    },
    /// A new version from a JSON file (see `corebank fraud --help`).
    Set {
        file: std::path::PathBuf,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Subject {
    Account,
    Customer,
}

#[derive(Debug, clap::Subcommand)]
enum WatchlistAction {
    Add {
        #[arg(value_enum)]
        subject: Subject,
        subject_id: String,
        #[arg(long)]
        reason: String,
        /// How long, in hours; until removed when absent.
        #[arg(long, allow_negative_numbers = true)]
        hours: Option<i64>,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    Remove {
        entry_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    List {
        /// Removed and expired entries too.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

pub async fn fraud(command: FraudCommand) -> anyhow::Result<()> {
    let mut client = FraudServiceClient::new(channel(&command.client.fraud_endpoint).await?);
    let json = command.client.json;
    let key = command.client.key();
    match command.action {
        FraudAction::Reviews {
            state,
            page_size,
            page_token,
        } => {
            let state = match state {
                None => pb::ReviewState::Unspecified,
                Some(ReviewStateFilter::Open) => pb::ReviewState::Open,
                Some(ReviewStateFilter::Approved) => pb::ReviewState::Approved,
                Some(ReviewStateFilter::Declined) => pb::ReviewState::Declined,
                Some(ReviewStateFilter::Expired) => pb::ReviewState::Expired,
            } as i32;
            let request = pb::ListReviewsRequest {
                state,
                page_size,
                page_token,
            };
            print(&client.list_reviews(request).await?.into_inner(), json)
        }
        FraudAction::Review { action } => {
            let (verdict, decision, skip_watchlist) = match action {
                ReviewAction::Show { review_id } => {
                    let review = client
                        .get_review(pb::GetReviewRequest { review_id })
                        .await?
                        .into_inner();
                    return print(&review, json);
                }
                ReviewAction::Approve(verdict) => (verdict, pb::FraudAction::Approve, false),
                ReviewAction::Decline {
                    verdict,
                    no_watchlist,
                } => (verdict, pb::FraudAction::Decline, no_watchlist),
            };
            let request = pb::DecideReviewRequest {
                review_id: verdict.review_id,
                decision: decision as i32,
                actor: verdict.actor,
                reason: verdict.reason,
                skip_watchlist,
                idempotency_key: key,
            };
            print(&client.decide_review(request).await?.into_inner(), json)
        }
        FraudAction::Decision { transaction_id } => print(
            &client
                .get_decision(pb::GetDecisionRequest { transaction_id })
                .await?
                .into_inner(),
            json,
        ),
        FraudAction::Alerts {
            account_id,
            page_size,
            page_token,
        } => {
            let request = pb::ListAlertsRequest {
                account_id,
                page_size,
                page_token,
            };
            print(&client.list_alerts(request).await?.into_inner(), json)
        }
        FraudAction::Rules { action } => match action {
            RulesAction::Show { version } => print(
                &client
                    .get_rule_set(pb::GetRuleSetRequest { version })
                    .await?
                    .into_inner(),
                json,
            ),
            RulesAction::Set {
                file,
                reason,
                actor,
            } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))
                    .map_err(bad_input)?;
                let mut request = rules_file(&text)
                    .with_context(|| format!("{} is not a rules file", file.display()))
                    .map_err(bad_input)?;
                request.actor = actor;
                request.reason = reason;
                request.idempotency_key = key;
                print(&client.update_rule_set(request).await?.into_inner(), json)
            }
        },
        FraudAction::Watchlist { action } => match action {
            WatchlistAction::Add {
                subject,
                subject_id,
                reason,
                hours,
                actor,
            } => {
                let subject = match subject {
                    Subject::Account => pb::WatchlistSubject::Account,
                    Subject::Customer => pb::WatchlistSubject::Customer,
                } as i32;
                let request = pb::AddToWatchlistRequest {
                    subject,
                    subject_id,
                    reason,
                    actor,
                    period: hours.map(|hours| prost_types::Duration {
                        seconds: hours.saturating_mul(3600),
                        nanos: 0,
                    }),
                    idempotency_key: key,
                };
                print(&client.add_to_watchlist(request).await?.into_inner(), json)
            }
            WatchlistAction::Remove {
                entry_id,
                reason,
                actor,
            } => {
                let request = pb::RemoveFromWatchlistRequest {
                    entry_id,
                    actor,
                    reason,
                    idempotency_key: key,
                };
                print(
                    &client.remove_from_watchlist(request).await?.into_inner(),
                    json,
                )
            }
            WatchlistAction::List {
                all,
                page_size,
                page_token,
            } => {
                let request = pb::ListWatchlistRequest {
                    include_removed: all,
                    page_size,
                    page_token,
                };
                print(&client.list_watchlist(request).await?.into_inner(), json)
            }
        },
    }
}

/// A rules file: a `RuleSet` as shown, or an `UpdateRuleSetRequest`.
fn rules_file(text: &str) -> anyhow::Result<pb::UpdateRuleSetRequest> {
    match from_json::<pb::RuleSet>(text) {
        Ok(shown) => Ok(pb::UpdateRuleSetRequest {
            rules: shown.rules,
            anomaly_history: shown.anomaly_history,
            decline_watchlist_period: shown.decline_watchlist_period,
            ..Default::default()
        }),
        Err(as_shown) => from_json::<pb::UpdateRuleSetRequest>(text).map_err(|as_request| {
            anyhow::anyhow!("{as_request} (nor a rule set as shown: {as_shown})")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_set_as_shown_is_a_rules_file_and_an_unknown_field_is_refused() {
        let shown = r#"{"version": "3", "rules": [{"ruleId": "big", "kind": "RULE_KIND_AMOUNT_ABOVE",
            "action": "FRAUD_ACTION_REVIEW", "currency": "USD", "threshold": "10000.00"}],
            "anomalyHistory": 50, "declineWatchlistPeriod": "604800s", "createdBy": "ada"}"#;
        let request = rules_file(shown).expect("a rule set as shown parses");
        assert_eq!(request.rules.len(), 1);
        assert_eq!(request.rules[0].threshold, "10000.00");
        assert_eq!(request.anomaly_history, 50);
        assert_eq!(
            request
                .decline_watchlist_period
                .map(|period| period.seconds),
            Some(604_800)
        );
        let typo = r#"{"rules": [{"ruleId": "big", "treshold": "1"}]}"#;
        let error = rules_file(typo).expect_err("a typo is refused").to_string();
        assert!(error.contains("treshold"), "{error}");
    }
}
