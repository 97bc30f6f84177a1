//! `corebank.v1.FraudService` (proto ⇄ domain): the analyst's review queue,
//! decisions, alerts, rule set and watchlist. Screening is not here: it is a
//! saga step on the bus. Every analyst action writes a row of the
//! append-only `analyst_action` log in the same transaction as its effect.

pub mod convert;
mod views;

use corebank_platform::auth::Principal;
use corebank_platform::clock::SharedClock;
use corebank_platform::error::required_uuid as id_field;
use corebank_platform::idempotency::fingerprint;
use corebank_platform::paging::Page;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use corebank_proto::v1::fraud_service_server::FraudService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::consumer::{self, Verdict};
use crate::store::{self, FraudStore, decisions, reviews, watchlist};

use views::*;

/// Reasons of the analyst API's refusals.
pub mod reason {
    pub const REVIEW_NOT_FOUND: &str = "REVIEW_NOT_FOUND";
    pub const DECISION_NOT_FOUND: &str = "DECISION_NOT_FOUND";
    pub const RULE_SET_NOT_FOUND: &str = "RULE_SET_NOT_FOUND";
    pub const WATCHLIST_ENTRY_NOT_FOUND: &str = "WATCHLIST_ENTRY_NOT_FOUND";
    /// The review was decided already (by an analyst or its deadline).
    pub const REVIEW_ALREADY_DECIDED: &str = "REVIEW_ALREADY_DECIDED";
    /// The review's deadline passed: its timeout policy decides it.
    pub const REVIEW_EXPIRED: &str = "REVIEW_EXPIRED";
}

/// The analyst API.
#[derive(Debug, Clone)]
pub struct FraudApi {
    store: FraudStore,
    clock: SharedClock,
}

impl FraudApi {
    pub fn new(store: FraudStore, clock: SharedClock) -> Self {
        Self { store, clock }
    }
}

/// Actor and reason of an analyst action: both required, bounded.
fn actor_and_reason(violations: &mut Violations, actor: &str, reason: &str) {
    violations.check(!actor.trim().is_empty(), "actor", "is required");
    violations.check(
        actor.len() <= 200,
        "actor",
        "must be at most 200 characters",
    );
    violations.check(!reason.trim().is_empty(), "reason", "is required");
    violations.check(
        reason.len() <= 2000,
        "reason",
        "must be at most 2000 characters",
    );
}

/// The idempotency key every mutating method requires.
fn required_key(violations: &mut Violations, key: &str) -> Option<String> {
    Some(corebank_platform::idempotency::required_key(
        violations, key,
    ))
}

#[tonic::async_trait]
impl FraudService for FraudApi {
    #[tracing::instrument(skip_all)]
    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Result<Response<pb::ListReviewsResponse>, Status> {
        let request = request.into_inner();
        let state = match pb::ReviewState::try_from(request.state) {
            Ok(pb::ReviewState::Unspecified) => None,
            Ok(state) => Some(review_state_name(state)),
            Err(_) => return Err(ApiError::invalid_field("state", "is not a review state").into()),
        };
        let filter = format!("reviews:{}", state.unwrap_or("any"));
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut conn = self.store.conn().await?;
        let mut rows = reviews::list(&mut conn, state, &page).await?;
        let next_page_token = page.finish(&mut rows, reviews::cursor, &filter);
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(review_view(&mut conn, row).await?);
        }
        Ok(Response::new(pb::ListReviewsResponse {
            reviews: out,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_review(
        &self,
        request: Request<pb::GetReviewRequest>,
    ) -> Result<Response<pb::Review>, Status> {
        let review_id = id_field("review_id", &request.into_inner().review_id)?;
        let mut conn = self.store.conn().await?;
        let row = reviews::get(&mut conn, review_id, false)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| review_not_found(review_id))?;
        Ok(Response::new(review_view(&mut conn, &row).await?))
    }

    #[tracing::instrument(skip_all, fields(review_id))]
    async fn decide_review(
        &self,
        request: Request<pb::DecideReviewRequest>,
    ) -> Result<Response<pb::Review>, Status> {
        // The authenticated caller is the actor, whatever the request says.
        let actor = Principal::actor_of(&request)?;
        let mut request = request.into_inner();
        request.actor = actor;
        let mut violations = Violations::default();
        let review_id = violations.take(
            "review_id",
            id_field("review_id", &request.review_id).map_err(|error| error.message().to_owned()),
        );
        let approve = match pb::FraudAction::try_from(request.decision) {
            Ok(pb::FraudAction::Approve) => Some(true),
            Ok(pb::FraudAction::Decline) => Some(false),
            _ => {
                violations.add(
                    "decision",
                    "must be FRAUD_ACTION_APPROVE or FRAUD_ACTION_DECLINE",
                );
                None
            }
        };
        actor_and_reason(&mut violations, &request.actor, &request.reason);
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let (Some(review_id), Some(approve)) = (review_id, approve) else {
            return Err(ApiError::invalid_field("review_id", "is invalid").into());
        };
        tracing::Span::current().record("review_id", tracing::field::display(review_id));
        let verdict = Verdict {
            approve,
            actor: request.actor.clone(),
            reason: request.reason.clone(),
            automatic: false,
            skip_watchlist: request.skip_watchlist,
        };
        let fingerprint = fingerprint(
            "DecideReview",
            &pb::DecideReviewRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let now = self.clock.now();
        let review = self
            .store
            .idempotent(key.as_deref(), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let row = reviews::get(conn, review_id, true)
                        .await?
                        .ok_or_else(|| review_not_found(review_id))?;
                    // Past the deadline the timeout policy decides, whether or
                    // not the sweep has run yet: the answer does not race it.
                    if row.deadline <= now || row.state == "expired" {
                        return Err(ApiError::failed_precondition(
                            reason::REVIEW_EXPIRED,
                            format!(
                                "review {review_id} passed its deadline {}: its timeout policy decides it",
                                row.deadline.to_rfc3339()
                            ),
                        ));
                    }
                    if row.state != "open" {
                        return Err(ApiError::failed_precondition(
                            reason::REVIEW_ALREADY_DECIDED,
                            format!("review {review_id} was already decided ({})", row.state),
                        ));
                    }
                    let decided = consumer::settle(conn, &row, &verdict, now).await?;
                    review_view(conn, &decided).await
                })
            })
            .await?;
        Ok(Response::new(review))
    }

    #[tracing::instrument(skip_all)]
    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let transaction_id = id_field("transaction_id", &request.into_inner().transaction_id)?;
        let mut conn = self.store.conn().await?;
        let row = decisions::by_transaction(&mut conn, transaction_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::not_found(
                    reason::DECISION_NOT_FOUND,
                    format!("no screening decision for transaction {transaction_id}"),
                )
            })?;
        Ok(Response::new(decision_view(&mut conn, &row).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let request = request.into_inner();
        let account_id = if request.account_id.is_empty() {
            None
        } else {
            Some(id_field("account_id", &request.account_id)?)
        };
        let filter = format!("alerts:{}", request.account_id);
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut conn = self.store.conn().await?;
        let mut rows = decisions::list_alerts(&mut conn, account_id, &page).await?;
        let next_page_token = page.finish(&mut rows, |row| row.alert_id.to_string(), &filter);
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: rows.iter().map(alert_view).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_rule_set(
        &self,
        request: Request<pb::GetRuleSetRequest>,
    ) -> Result<Response<pb::RuleSet>, Status> {
        let version = request.into_inner().version;
        if version < 0 {
            return Err(ApiError::invalid_field("version", "must not be negative").into());
        }
        let mut conn = self.store.conn().await?;
        let rules = if version == 0 {
            store::active_rule_set(&mut conn)
                .await
                .map_err(ApiError::from)?
        } else {
            store::rule_set(&mut conn, version)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::not_found(
                        reason::RULE_SET_NOT_FOUND,
                        format!("no rule set version {version}"),
                    )
                })?
        };
        Ok(Response::new(convert::rule_set_to_proto(&rules)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_rule_set(
        &self,
        request: Request<pb::UpdateRuleSetRequest>,
    ) -> Result<Response<pb::RuleSet>, Status> {
        // The authenticated caller is the actor, whatever the request says.
        let actor = Principal::actor_of(&request)?;
        let mut request = request.into_inner();
        request.actor = actor;
        let mut violations = Violations::default();
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let draft = convert::parse_update_rule_set(&request).map_err(ApiError::from)?;
        let fingerprint = fingerprint(
            "UpdateRuleSet",
            &pb::UpdateRuleSetRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let now = self.clock.now();
        let stored = self
            .store
            .idempotent(key.as_deref(), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let stored = store::insert_rule_set(conn, draft, now).await?;
                    store::log_action(
                        conn,
                        &stored.created_by,
                        "update_rule_set",
                        &stored.version.to_string(),
                        &stored.reason,
                        serde_json::json!({ "rules": stored.rules.len() }),
                        now,
                    )
                    .await?;
                    tracing::info!(version = stored.version, actor = %stored.created_by, "rule set updated");
                    Ok(convert::rule_set_to_proto(&stored))
                })
            })
            .await?;
        Ok(Response::new(stored))
    }

    #[tracing::instrument(skip_all)]
    async fn add_to_watchlist(
        &self,
        request: Request<pb::AddToWatchlistRequest>,
    ) -> Result<Response<pb::WatchlistEntry>, Status> {
        // The authenticated caller is the actor, whatever the request says.
        let actor = Principal::actor_of(&request)?;
        let mut request = request.into_inner();
        request.actor = actor;
        let mut violations = Violations::default();
        let subject = match pb::WatchlistSubject::try_from(request.subject) {
            Ok(pb::WatchlistSubject::Account) => Some("account"),
            Ok(pb::WatchlistSubject::Customer) => Some("customer"),
            _ => {
                violations.add(
                    "subject",
                    "must be WATCHLIST_SUBJECT_ACCOUNT or WATCHLIST_SUBJECT_CUSTOMER",
                );
                None
            }
        };
        let subject_id = violations.take(
            "subject_id",
            id_field("subject_id", &request.subject_id).map_err(|error| error.message().to_owned()),
        );
        let period = match request.period {
            None => None,
            Some(period) if period.seconds >= 60 && period.nanos == 0 => {
                chrono::Duration::try_seconds(period.seconds)
            }
            Some(_) => {
                violations.add("period", "must be whole seconds, at least 60");
                None
            }
        };
        actor_and_reason(&mut violations, &request.actor, &request.reason);
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let (Some(subject), Some(subject_id)) = (subject, subject_id) else {
            return Err(ApiError::invalid_field("subject_id", "is invalid").into());
        };
        let fingerprint = fingerprint(
            "AddToWatchlist",
            &pb::AddToWatchlistRequest {
                idempotency_key: String::new(),
                ..request.clone()
            },
        );
        let now = self.clock.now();
        let entry = self
            .store
            .idempotent(key.as_deref(), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let entry = watchlist::add(
                        conn,
                        subject,
                        subject_id,
                        &request.reason,
                        &request.actor,
                        period.map(|period| now + period),
                        now,
                    )
                    .await?;
                    store::log_action(
                        conn,
                        &request.actor,
                        "add_to_watchlist",
                        &entry.entry_id.to_string(),
                        &request.reason,
                        serde_json::json!({ "subject": subject, "subject_id": subject_id }),
                        now,
                    )
                    .await?;
                    Ok(watchlist_view(&entry))
                })
            })
            .await?;
        Ok(Response::new(entry))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_from_watchlist(
        &self,
        request: Request<pb::RemoveFromWatchlistRequest>,
    ) -> Result<Response<pb::WatchlistEntry>, Status> {
        // The authenticated caller is the actor, whatever the request says.
        let actor = Principal::actor_of(&request)?;
        let mut request = request.into_inner();
        request.actor = actor;
        let mut violations = Violations::default();
        let entry_id = violations.take(
            "entry_id",
            id_field("entry_id", &request.entry_id).map_err(|error| error.message().to_owned()),
        );
        actor_and_reason(&mut violations, &request.actor, &request.reason);
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let Some(entry_id) = entry_id else {
            return Err(ApiError::invalid_field("entry_id", "is invalid").into());
        };
        let fingerprint = fingerprint(
            "RemoveFromWatchlist",
            &pb::RemoveFromWatchlistRequest {
                idempotency_key: String::new(),
                ..request.clone()
            },
        );
        let now = self.clock.now();
        let entry = self
            .store
            .idempotent(key.as_deref(), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let Some(entry) = watchlist::remove(conn, entry_id, &request.actor, now).await? else {
                        let known = watchlist::get(conn, entry_id).await?;
                        return Err(match known {
                            Some(_) => ApiError::failed_precondition(
                                "WATCHLIST_ENTRY_ALREADY_REMOVED",
                                format!("watchlist entry {entry_id} was already removed"),
                            ),
                            None => ApiError::not_found(
                                reason::WATCHLIST_ENTRY_NOT_FOUND,
                                format!("no watchlist entry {entry_id}"),
                            ),
                        });
                    };
                    store::log_action(
                        conn,
                        &request.actor,
                        "remove_from_watchlist",
                        &entry_id.to_string(),
                        &request.reason,
                        serde_json::json!({ "subject": entry.subject, "subject_id": entry.subject_id }),
                        now,
                    )
                    .await?;
                    Ok(watchlist_view(&entry))
                })
            })
            .await?;
        Ok(Response::new(entry))
    }

    #[tracing::instrument(skip_all)]
    async fn list_watchlist(
        &self,
        request: Request<pb::ListWatchlistRequest>,
    ) -> Result<Response<pb::ListWatchlistResponse>, Status> {
        let request = request.into_inner();
        let filter = format!("watchlist:{}", request.include_removed);
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut conn = self.store.conn().await?;
        let mut rows =
            watchlist::list(&mut conn, request.include_removed, &page, self.clock.now()).await?;
        let next_page_token = page.finish(&mut rows, |row| row.entry_id.to_string(), &filter);
        Ok(Response::new(pb::ListWatchlistResponse {
            entries: rows.iter().map(watchlist_view).collect(),
            next_page_token,
        }))
    }
}

fn review_not_found(review_id: Uuid) -> ApiError {
    ApiError::not_found(reason::REVIEW_NOT_FOUND, format!("no review {review_id}"))
}
