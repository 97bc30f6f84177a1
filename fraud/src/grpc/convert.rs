//! Proto ⇄ domain for the fraud service: rule sets, rules, feature
//! snapshots, fired rules and their enums. Decimals travel as strings and
//! durations as `google.protobuf.Duration` (whole seconds: the domain stores
//! seconds, so a fraction would not survive storage and is refused). Parse
//! errors are violations named by the proto field path (`rules[0].threshold`),
//! merged with the domain's own validation so a caller sees everything at once.

use corebank_platform::time::{from_timestamp, to_timestamp};
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use rust_decimal::Decimal;

use crate::domain::{
    Action, FeatureSnapshot, FiredRule, NewRuleSet, Rule, RuleDraft, RuleSet, RuleSetDraft,
    RuleViolations, TransactionKind, validate,
};

mod enums;

pub use enums::{
    action_from_proto, action_to_proto, duration_to_proto, outcome_to_proto, parse_duration,
    rule_kind_from_proto, rule_kind_to_proto, timeout_action_to_proto, transaction_kind_from_proto,
    transaction_kind_to_proto, window_from_proto, window_to_proto,
};

impl From<RuleViolations> for ApiError {
    /// A `VALIDATION_FAILED` error with one `BadRequest` violation per field.
    fn from(found: RuleViolations) -> Self {
        let mut violations = Violations::default();
        for violation in found.into_vec() {
            violations.add(violation.field, violation.message);
        }
        violations.into_error()
    }
}

/// An optional decimal string; empty is absent.
fn parse_decimal(text: &str) -> Result<Option<Decimal>, &'static str> {
    if text.is_empty() {
        return Ok(None);
    }
    Decimal::from_str_exact(text)
        .map(Some)
        .map_err(|_| "must be a decimal string such as \"10000.00\"")
}

fn decimal_text(value: Option<Decimal>) -> String {
    value.map(|decimal| decimal.to_string()).unwrap_or_default()
}

/// Records a parse error against `field` and keeps the value otherwise.
fn take<T: Default>(found: &mut RuleViolations, field: &str, parsed: Result<T, &str>) -> T {
    parsed.unwrap_or_else(|message| {
        found.add(field, message);
        T::default()
    })
}

/// A request's rule as a draft; parse errors go to `found`.
fn rule_draft(index: usize, rule: &pb::Rule, found: &mut RuleViolations) -> RuleDraft {
    let field = |name: &str| format!("rules[{index}].{name}");
    let applies_to = rule
        .applies_to
        .iter()
        .enumerate()
        .filter_map(|(position, kind)| {
            let parsed = transaction_kind_from_proto(*kind).map(Some);
            take(found, &field(&format!("applies_to[{position}]")), parsed)
        })
        .collect();
    RuleDraft {
        rule_id: rule.rule_id.clone(),
        kind: take(found, &field("kind"), rule_kind_from_proto(rule.kind)),
        action: take(found, &field("action"), action_from_proto(rule.action)),
        currency: (!rule.currency.is_empty()).then(|| rule.currency.clone()),
        threshold: take(found, &field("threshold"), parse_decimal(&rule.threshold)),
        // proto3 has no absent integer: 0 means unset.
        count_limit: (rule.count_limit != 0).then_some(rule.count_limit),
        window: take(found, &field("window"), window_from_proto(rule.window)),
        band: take(found, &field("band"), parse_decimal(&rule.band)),
        min_age: take(
            found,
            &field("min_age"),
            parse_duration(rule.min_age.as_ref()),
        ),
        review_deadline: take(
            found,
            &field("review_deadline"),
            parse_duration(rule.review_deadline.as_ref()),
        ),
        timeout_action: take(
            found,
            &field("timeout_action"),
            action_from_proto(rule.timeout_action),
        ),
        applies_to,
        description: rule.description.clone(),
    }
}

/// Parses and validates the fields a rule set is built from.
fn parse_rule_set_fields(
    rules: &[pb::Rule],
    anomaly_history: i32,
    decline_watchlist_period: Option<&prost_types::Duration>,
    actor: &str,
    reason: &str,
) -> Result<NewRuleSet, RuleViolations> {
    let mut found = RuleViolations::default();
    let rules = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| rule_draft(index, rule, &mut found))
        .collect();
    let draft = RuleSetDraft {
        rules,
        anomaly_history: i64::from(anomaly_history),
        decline_watchlist_period: take(
            &mut found,
            "decline_watchlist_period",
            parse_duration(decline_watchlist_period),
        ),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    };
    match validate(&draft) {
        Ok(valid) if found.is_empty() => Ok(valid),
        Ok(_) => Err(found),
        Err(invalid) => {
            found.merge_unreported(invalid);
            Err(found)
        }
    }
}

/// An `UpdateRuleSetRequest` as a validated rule set awaiting its version;
/// every violation is named by its proto field path. The idempotency key is
/// the handler's business.
pub fn parse_update_rule_set(
    request: &pb::UpdateRuleSetRequest,
) -> Result<NewRuleSet, RuleViolations> {
    parse_rule_set_fields(
        &request.rules,
        request.anomaly_history,
        request.decline_watchlist_period.as_ref(),
        &request.actor,
        &request.reason,
    )
}

/// A whole proto rule set (e.g. one read back from the API), validated.
pub fn rule_set_from_proto(set: &pb::RuleSet) -> Result<RuleSet, RuleViolations> {
    let created_at = set.create_time.as_ref().and_then(from_timestamp);
    let parsed = parse_rule_set_fields(
        &set.rules,
        set.anomaly_history,
        set.decline_watchlist_period.as_ref(),
        &set.created_by,
        &set.reason,
    );
    match (parsed, created_at) {
        (Ok(valid), Some(created_at)) => Ok(valid.into_rule_set(set.version, created_at)),
        (parsed, _) => {
            let mut found = parsed.err().unwrap_or_default();
            if created_at.is_none() {
                found.add("create_time", "must be a valid timestamp");
            }
            Err(found)
        }
    }
}

pub fn rule_to_proto(rule: &Rule) -> pb::Rule {
    let reviews = rule.action == Action::Review;
    pb::Rule {
        rule_id: rule.rule_id.clone(),
        kind: rule_kind_to_proto(rule.kind).into(),
        action: action_to_proto(rule.action).into(),
        currency: rule.currency.clone().unwrap_or_default(),
        threshold: decimal_text(rule.threshold),
        count_limit: rule.count_limit.unwrap_or(0),
        window: rule
            .window
            .map_or(0, |window| window_to_proto(window).into()),
        band: decimal_text(rule.band),
        min_age: rule.min_age.map(duration_to_proto),
        review_deadline: rule.review_deadline.map(duration_to_proto),
        // Only a review has a timeout policy; elsewhere it stays unspecified.
        timeout_action: if reviews {
            timeout_action_to_proto(rule.timeout_action).into()
        } else {
            0
        },
        applies_to: rule
            .applies_to
            .iter()
            .map(|kind| transaction_kind_to_proto(*kind).into())
            .collect(),
        description: rule.description.clone(),
    }
}

pub fn rule_set_to_proto(set: &RuleSet) -> pb::RuleSet {
    pb::RuleSet {
        version: set.version,
        rules: set.rules.iter().map(rule_to_proto).collect(),
        anomaly_history: i32::try_from(set.anomaly_history).unwrap_or(i32::MAX),
        decline_watchlist_period: Some(duration_to_proto(set.decline_watchlist_period)),
        created_by: set.created_by.clone(),
        reason: set.reason.clone(),
        create_time: Some(to_timestamp(set.created_at)),
    }
}

pub fn snapshot_to_proto(snapshot: &FeatureSnapshot) -> pb::FeatureSnapshot {
    pb::FeatureSnapshot {
        count_1h: snapshot.count_1h,
        count_24h: snapshot.count_24h,
        count_7d: snapshot.count_7d,
        sum_1h: snapshot.sum_1h.to_string(),
        sum_24h: snapshot.sum_24h.to_string(),
        sum_7d: snapshot.sum_7d.to_string(),
        distinct_sources_24h: snapshot.distinct_sources_24h,
        first_time_payee: snapshot.first_time_payee,
        account_age: snapshot.account_age.map(duration_to_proto),
        kyc_age: snapshot.kyc_age.map(duration_to_proto),
        anomaly_score: decimal_text(snapshot.anomaly_score),
        history_size: i32::try_from(snapshot.history_size).unwrap_or(i32::MAX),
        watchlist_hits: snapshot.watchlist_hits.clone(),
        structuring_count_24h: snapshot.structuring_count_24h,
        amount: Some(pb::Money {
            currency: snapshot.currency.clone(),
            amount: snapshot.amount.to_string(),
        }),
        kind: transaction_kind_to_proto(snapshot.kind).into(),
    }
}

/// A required decimal string.
fn required_decimal(found: &mut RuleViolations, field: &str, text: &str) -> Decimal {
    match parse_decimal(text) {
        Ok(Some(value)) => value,
        Ok(None) => {
            found.add(field, "is required");
            Decimal::ZERO
        }
        Err(message) => {
            found.add(field, message);
            Decimal::ZERO
        }
    }
}

/// A proto snapshot back in the domain (a stored decision read through the API).
pub fn snapshot_from_proto(
    snapshot: &pb::FeatureSnapshot,
) -> Result<FeatureSnapshot, RuleViolations> {
    let mut found = RuleViolations::default();
    let money = snapshot.amount.clone().unwrap_or_default();
    if snapshot.amount.is_none() {
        found.add("amount", "is required");
    }
    let parsed = FeatureSnapshot {
        count_1h: snapshot.count_1h,
        count_24h: snapshot.count_24h,
        count_7d: snapshot.count_7d,
        sum_1h: required_decimal(&mut found, "sum_1h", &snapshot.sum_1h),
        sum_24h: required_decimal(&mut found, "sum_24h", &snapshot.sum_24h),
        sum_7d: required_decimal(&mut found, "sum_7d", &snapshot.sum_7d),
        distinct_sources_24h: snapshot.distinct_sources_24h,
        first_time_payee: snapshot.first_time_payee,
        account_age: take(
            &mut found,
            "account_age",
            parse_duration(snapshot.account_age.as_ref()),
        ),
        kyc_age: take(
            &mut found,
            "kyc_age",
            parse_duration(snapshot.kyc_age.as_ref()),
        ),
        anomaly_score: take(
            &mut found,
            "anomaly_score",
            parse_decimal(&snapshot.anomaly_score),
        ),
        history_size: take(
            &mut found,
            "history_size",
            u32::try_from(snapshot.history_size).map_err(|_| "must not be negative"),
        ),
        watchlist_hits: snapshot.watchlist_hits.clone(),
        structuring_count_24h: snapshot.structuring_count_24h,
        amount: required_decimal(&mut found, "amount.amount", &money.amount),
        currency: money.currency,
        kind: take(
            &mut found,
            "kind",
            transaction_kind_from_proto(snapshot.kind).map(Some),
        )
        .unwrap_or(TransactionKind::Transfer),
    };
    if found.is_empty() {
        Ok(parsed)
    } else {
        Err(found)
    }
}

pub fn fired_rule_to_proto(fired: &FiredRule) -> pb::FiredRule {
    pb::FiredRule {
        rule_id: fired.rule_id.clone(),
        kind: rule_kind_to_proto(fired.kind).into(),
        action: action_to_proto(fired.action).into(),
        value: fired.value.clone(),
        threshold: fired.threshold.clone(),
    }
}

pub fn fired_rule_from_proto(fired: &pb::FiredRule) -> Result<FiredRule, RuleViolations> {
    let mut found = RuleViolations::default();
    let kind = required(&mut found, "kind", rule_kind_from_proto(fired.kind));
    let action = required(&mut found, "action", action_from_proto(fired.action));
    match (kind, action) {
        (Some(kind), Some(action)) => Ok(FiredRule {
            rule_id: fired.rule_id.clone(),
            kind,
            action,
            value: fired.value.clone(),
            threshold: fired.threshold.clone(),
        }),
        _ => Err(found),
    }
}

/// A required enum: unspecified and unknown values are both violations.
fn required<T>(
    found: &mut RuleViolations,
    field: &str,
    parsed: Result<Option<T>, &str>,
) -> Option<T> {
    match parsed {
        Ok(Some(value)) => Some(value),
        Ok(None) => {
            found.add(field, "is required");
            None
        }
        Err(message) => {
            found.add(field, message);
            None
        }
    }
}

#[cfg(test)]
mod tests;
