//! Deciding a review, once: by an analyst before its deadline, or by the
//! rule's timeout policy after it. Either way the final answer goes to the
//! saga under the screen's command id, in the same transaction as the
//! decision, with a `fraud.review.decided` event; an analyst's decline puts
//! the destination on the watchlist (unless told not to).

use super::*;

/// Who decides a review, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub approve: bool,
    pub actor: String,
    pub reason: String,
    /// Decided by the deadline, not a person.
    pub automatic: bool,
    /// With a decline: keep the destination off the watchlist.
    pub skip_watchlist: bool,
}

/// Records `verdict` on the open, locked `review` and sends its final answer.
pub async fn settle(
    conn: &mut PgConnection,
    review: &ReviewRow,
    verdict: &Verdict,
    now: DateTime<Utc>,
) -> Result<ReviewRow, sqlx::Error> {
    let state = match (verdict.automatic, verdict.approve) {
        (true, _) => "expired",
        (false, true) => "approved",
        (false, false) => "declined",
    };
    let decided = reviews::decide(
        conn,
        review.review_id,
        state,
        &verdict.actor,
        &verdict.reason,
        verdict.automatic,
        now,
    )
    .await?;
    store::log_action(
        conn,
        &verdict.actor,
        if verdict.automatic {
            "expire_review"
        } else {
            "decide_review"
        },
        &review.review_id.to_string(),
        &verdict.reason,
        serde_json::json!({
            "transaction_id": review.transaction_id,
            "outcome": if verdict.approve { "approve" } else { "decline" },
            "automatic": verdict.automatic,
        }),
        now,
    )
    .await?;
    if !verdict.approve && !verdict.automatic && !verdict.skip_watchlist {
        watch_destination(conn, review, verdict, now).await?;
    }
    let reply = final_reply(&decided);
    let message = OutgoingMessage::reply(
        wire::service::ORCHESTRATOR,
        pb::CommandReply::full_name(),
        reply.encode_to_vec(),
    )
    .with_correlation_id(review.saga_id);
    messaging::enqueue(conn, message).await?;
    let decided_event = pb::FraudReviewDecidedEvent {
        review_id: review.review_id.to_string(),
        transaction_id: review.transaction_id.to_string(),
        outcome: if verdict.approve {
            "approve"
        } else {
            "decline"
        }
        .to_owned(),
        decided_by: verdict.actor.clone(),
        automatic: verdict.automatic,
    };
    messaging::enqueue(
        conn,
        OutgoingMessage::event_of(wire::event::FRAUD_REVIEW_DECIDED, &decided_event)
            .with_correlation_id(review.saga_id),
    )
    .await?;
    metrics::counter!(
        "corebank_fraud_reviews_decided_total",
        "outcome" => decided_event.outcome.clone(),
        "automatic" => verdict.automatic.to_string()
    )
    .increment(1);
    tracing::info!(
        review_id = %review.review_id,
        transaction_id = %review.transaction_id,
        state,
        actor = %verdict.actor,
        "review decided"
    );
    Ok(decided)
}

/// The answer a decided review sends (and re-sends to a repeated screen).
pub fn final_reply(review: &ReviewRow) -> pb::CommandReply {
    let approved = match review.state.as_str() {
        "approved" => true,
        "expired" => review.timeout_action == "approve",
        _ => false,
    };
    let by = review.decided_by.as_deref().unwrap_or("system");
    let why = review.decision_reason.as_deref().unwrap_or_default();
    if approved {
        pb::CommandReply {
            command_id: review.command_id.clone(),
            saga_id: review.saga_id.to_string(),
            outcome: pb::CommandOutcome::Succeeded as i32,
            detail: format!("review approved by {by}: {why}"),
            ..Default::default()
        }
    } else {
        rejected(
            &review.command_id,
            review.saga_id,
            reason::FRAUD_DECLINED,
            format!("review declined by {by}: {why}"),
        )
    }
}

/// An analyst's decline feeds back: the destination (the mule) goes on the
/// watchlist for the rule set's period, so the next payment to it is caught.
async fn watch_destination(
    conn: &mut PgConnection,
    review: &ReviewRow,
    verdict: &Verdict,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let Some(decision) = decisions::by_id(conn, review.decision_id).await? else {
        return Ok(());
    };
    let Some(destination) = decision.destination_account_id else {
        return Ok(());
    };
    let rules = store::active_rule_set(conn).await?;
    let expires_at = chrono::Duration::from_std(rules.decline_watchlist_period)
        .ok()
        .map(|period| now + period);
    let reason = format!(
        "declined review {} of transaction {}: {}",
        review.review_id, review.transaction_id, verdict.reason
    );
    let entry = store::watchlist::add(
        conn,
        "account",
        destination,
        &reason,
        &verdict.actor,
        expires_at,
        now,
    )
    .await?;
    store::log_action(
        conn,
        &verdict.actor,
        "add_to_watchlist",
        &entry.entry_id.to_string(),
        &reason,
        serde_json::json!({ "subject": "account", "subject_id": destination }),
        now,
    )
    .await
}

/// Decides every open review past its deadline by its timeout policy, in
/// one transaction per batch; how many it decided.
pub async fn expire_reviews(store: &FraudStore, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut tx = store.begin().await.map_err(|error| anyhow!("{error}"))?;
    let due = reviews::claim_due(&mut tx, now).await?;
    for review in &due {
        let approve = review.timeout_action == "approve";
        let verdict = Verdict {
            approve,
            actor: "system".to_owned(),
            reason: format!(
                "no decision by the deadline {}: {} by the rule's timeout policy",
                review.deadline.to_rfc3339(),
                if approve { "approved" } else { "declined" }
            ),
            automatic: true,
            skip_watchlist: true,
        };
        settle(&mut tx, review, &verdict, now).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}
