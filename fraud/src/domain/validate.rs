//! Turns an analyst's draft into a rule set that can be stored, or says
//! everything wrong with it at once, each violation named by the request's
//! field path (`rules[2].threshold`), as a `BadRequest` wants it.
//!
//! Beyond per-field checks it refuses what would make a rule set surprising:
//! parameters a kind does not use (a threshold on a count rule is a mistake,
//! not a no-op), amount thresholds without a currency, velocity-like rules
//! that could block deposits, review settings on rules that do not review,
//! and two structuring rules for one currency (the store counts deposits in
//! one band per currency).

use std::time::Duration;

use rust_decimal::Decimal;

use super::draft::{NewRuleSet, RuleDraft, RuleSetDraft, RuleViolations};
use super::features::TransactionKind;
use super::rules::{Action, Rule, RuleKind, TimeoutAction};

/// At most this many rules in a set: every screen evaluates all of them.
pub const MAX_RULES: usize = 200;
/// The anomaly history's bounds: below 5 there is no "usual", above 1000
/// the store reads too much per screen.
pub const ANOMALY_HISTORY: std::ops::RangeInclusive<i64> = 5..=1_000;
/// A review deadline's bounds. Holds live 30 days; a review must end long
/// before its hold expires.
pub const REVIEW_DEADLINE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(7 * 86_400);
/// A new-account age's bounds.
pub const MIN_AGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(365 * 86_400);
/// The decline watchlist period's bounds.
pub const DECLINE_WATCHLIST_PERIOD: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(3_600)..=Duration::from_secs(365 * 86_400);

const MAX_RULE_ID: usize = 64;
const MAX_DESCRIPTION: usize = 500;
const MAX_ACTOR: usize = 200;
const MAX_REASON: usize = 500;

/// Validates a whole draft, collecting every violation.
pub fn validate(draft: &RuleSetDraft) -> Result<NewRuleSet, RuleViolations> {
    let mut violations = RuleViolations::default();
    if draft.rules.len() > MAX_RULES {
        violations.add("rules", format!("must hold at most {MAX_RULES} rules"));
    }
    let rules: Vec<Option<Rule>> = draft
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| validate_rule(index, rule, &draft.rules[..index], &mut violations))
        .collect();
    check_one_structuring_per_currency(&draft.rules, &mut violations);
    if !ANOMALY_HISTORY.contains(&draft.anomaly_history) {
        violations.add(
            "anomaly_history",
            format!(
                "must be between {} and {}",
                ANOMALY_HISTORY.start(),
                ANOMALY_HISTORY.end()
            ),
        );
    }
    match draft.decline_watchlist_period {
        None => violations.add("decline_watchlist_period", "is required"),
        Some(period) if !DECLINE_WATCHLIST_PERIOD.contains(&period) => violations.add(
            "decline_watchlist_period",
            "must be between 1 hour and 365 days",
        ),
        Some(_) => {}
    }
    check_text(&mut violations, "actor", &draft.actor, MAX_ACTOR);
    check_text(&mut violations, "reason", &draft.reason, MAX_REASON);
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(NewRuleSet {
        rules: rules.into_iter().flatten().collect(),
        anomaly_history: u32::try_from(draft.anomaly_history).unwrap_or(u32::MAX),
        decline_watchlist_period: draft.decline_watchlist_period.unwrap_or_default(),
        created_by: draft.actor.trim().to_owned(),
        reason: draft.reason.trim().to_owned(),
    })
}

fn check_text(violations: &mut RuleViolations, field: &str, text: &str, max: usize) {
    if text.trim().is_empty() {
        violations.add(field, "is required");
    } else if text.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    }
}

/// Whether a kind requires, allows or refuses a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
    Unused,
}

/// The parameters of a kind: threshold, count_limit, window, band, min_age.
fn needs(kind: RuleKind) -> [Need; 5] {
    use Need::*;
    match kind {
        RuleKind::AmountAbove | RuleKind::FirstPayeeAmount | RuleKind::AnomalyScore => {
            [Required, Unused, Unused, Unused, Unused]
        }
        RuleKind::VelocityCount => [Unused, Required, Required, Unused, Unused],
        RuleKind::VelocitySum => [Required, Unused, Required, Unused, Unused],
        RuleKind::FanIn => [Unused, Required, Unused, Unused, Unused],
        RuleKind::Watchlist => [Unused, Unused, Unused, Unused, Unused],
        RuleKind::Structuring => [Required, Required, Unused, Required, Unused],
        RuleKind::NewAccount => [Optional, Unused, Unused, Unused, Required],
    }
}

/// Checks presence against `need`, then the value with `check`.
fn param<T>(
    violations: &mut RuleViolations,
    field: String,
    value: Option<&T>,
    need: Need,
    kind: RuleKind,
    check: impl Fn(&T) -> Result<(), String>,
) {
    match (value, need) {
        (None, Need::Required) => {
            violations.add(field, format!("is required for {} rules", kind.name()))
        }
        (Some(_), Need::Unused) => {
            violations.add(field, format!("is not used by {} rules", kind.name()))
        }
        (Some(value), _) => {
            if let Err(message) = check(value) {
                violations.add(field, message);
            }
        }
        (None, _) => {}
    }
}

fn positive(value: &Decimal) -> Result<(), String> {
    if *value > Decimal::ZERO {
        Ok(())
    } else {
        Err("must be a positive decimal".to_owned())
    }
}

/// Validates one rule; `Some` only when it has no violation.
fn validate_rule(
    index: usize,
    draft: &RuleDraft,
    earlier: &[RuleDraft],
    violations: &mut RuleViolations,
) -> Option<Rule> {
    let before = violations.len();
    let field = |name: &str| format!("rules[{index}].{name}");
    check_rule_id(&draft.rule_id, earlier, violations, field("rule_id"));
    if draft.kind.is_none() {
        violations.add(field("kind"), "is required");
    }
    if draft.action.is_none() {
        violations.add(
            field("action"),
            "is required: APPROVE, REVIEW, DECLINE or ALERT",
        );
    }
    if let Some(currency) = &draft.currency
        && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
    {
        violations.add(
            field("currency"),
            "must be a 3-letter uppercase ISO 4217 code",
        );
    }
    if draft.description.chars().count() > MAX_DESCRIPTION {
        violations.add(
            field("description"),
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    }
    check_review_settings(draft, violations, &field);
    check_applies_to(draft, violations, &field);
    if let Some(kind) = draft.kind {
        check_parameters(kind, draft, violations, &field);
    }
    if violations.len() > before {
        return None;
    }
    Some(Rule {
        rule_id: draft.rule_id.clone(),
        kind: draft.kind?,
        action: draft.action?,
        currency: draft.currency.clone(),
        threshold: draft.threshold,
        count_limit: draft.count_limit,
        window: draft.window,
        band: draft.band,
        min_age: draft.min_age,
        review_deadline: draft.review_deadline,
        timeout_action: match draft.timeout_action {
            Some(Action::Approve) => TimeoutAction::Approve,
            _ => TimeoutAction::Decline,
        },
        applies_to: draft.applies_to.clone(),
        description: draft.description.clone(),
    })
}

fn check_parameters(
    kind: RuleKind,
    draft: &RuleDraft,
    violations: &mut RuleViolations,
    field: &impl Fn(&str) -> String,
) {
    let [threshold, count_limit, window, band, min_age] = needs(kind);
    param(
        violations,
        field("threshold"),
        draft.threshold.as_ref(),
        threshold,
        kind,
        positive,
    );
    param(
        violations,
        field("count_limit"),
        draft.count_limit.as_ref(),
        count_limit,
        kind,
        |limit| {
            if *limit >= 1 {
                Ok(())
            } else {
                Err("must be at least 1".to_owned())
            }
        },
    );
    param(
        violations,
        field("window"),
        draft.window.as_ref(),
        window,
        kind,
        |_| Ok(()),
    );
    param(
        violations,
        field("band"),
        draft.band.as_ref(),
        band,
        kind,
        |value| {
            positive(value)?;
            match draft.threshold {
                Some(threshold) if *value >= threshold => {
                    Err("must be less than the threshold".to_owned())
                }
                _ => Ok(()),
            }
        },
    );
    param(
        violations,
        field("min_age"),
        draft.min_age.as_ref(),
        min_age,
        kind,
        |age| {
            if MIN_AGE.contains(age) {
                Ok(())
            } else {
                Err("must be between 1 second and 365 days".to_owned())
            }
        },
    );
    let amount_threshold = match kind {
        RuleKind::AmountAbove
        | RuleKind::VelocitySum
        | RuleKind::FirstPayeeAmount
        | RuleKind::Structuring => true,
        RuleKind::NewAccount => draft.threshold.is_some(),
        _ => false,
    };
    if amount_threshold && draft.currency.is_none() {
        violations.add(
            field("currency"),
            "is required: amount thresholds are per currency",
        );
    }
}

fn check_review_settings(
    draft: &RuleDraft,
    violations: &mut RuleViolations,
    field: &impl Fn(&str) -> String,
) {
    let reviews = draft.action == Some(Action::Review);
    if let Some(deadline) = draft.review_deadline {
        if !reviews {
            violations.add(field("review_deadline"), "only applies to REVIEW rules");
        } else if !REVIEW_DEADLINE.contains(&deadline) {
            violations.add(
                field("review_deadline"),
                "must be between 1 minute and 7 days",
            );
        }
    }
    if let Some(timeout) = draft.timeout_action {
        if !matches!(timeout, Action::Approve | Action::Decline) {
            violations.add(field("timeout_action"), "must be APPROVE or DECLINE");
        } else if !reviews {
            violations.add(field("timeout_action"), "only applies to REVIEW rules");
        }
    }
}

fn check_applies_to(
    draft: &RuleDraft,
    violations: &mut RuleViolations,
    field: &impl Fn(&str) -> String,
) {
    for (position, kind) in draft.applies_to.iter().enumerate() {
        if draft.applies_to[..position].contains(kind) {
            violations.add(
                field(&format!("applies_to[{position}]")),
                format!("repeats {}", kind.as_str()),
            );
        }
    }
    let kinds = &draft.applies_to;
    match draft.kind {
        Some(
            RuleKind::VelocityCount
            | RuleKind::VelocitySum
            | RuleKind::FanIn
            | RuleKind::FirstPayeeAmount,
        ) if kinds.is_empty() || kinds.contains(&TransactionKind::Deposit) => {
            violations.add(
                field("applies_to"),
                "must list transfer and/or withdrawal (empty means all): a deposit is never \
                 blocked by a velocity, fan-in or first-payee rule",
            );
        }
        Some(RuleKind::Structuring) if kinds.as_slice() != [TransactionKind::Deposit] => {
            violations.add(
                field("applies_to"),
                "must be exactly [deposit]: structuring looks at deposits",
            );
        }
        _ => {}
    }
}

fn check_rule_id(id: &str, earlier: &[RuleDraft], violations: &mut RuleViolations, field: String) {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
    if id.is_empty() {
        violations.add(field, "is required");
    } else if id.len() > MAX_RULE_ID {
        violations.add(field, format!("must be at most {MAX_RULE_ID} characters"));
    } else if !id.bytes().all(allowed) {
        violations.add(field, "must hold only a-z, 0-9, '-' and '_'");
    } else if let Some(first) = earlier.iter().position(|other| other.rule_id == id) {
        violations.add(field, format!("duplicates rules[{first}].rule_id"));
    }
}

fn check_one_structuring_per_currency(rules: &[RuleDraft], violations: &mut RuleViolations) {
    let structuring: Vec<(usize, Option<&str>)> = rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.kind == Some(RuleKind::Structuring))
        .map(|(index, rule)| (index, rule.currency.as_deref()))
        .collect();
    for (position, (index, currency)) in structuring.iter().enumerate() {
        let overlapping = structuring[..position]
            .iter()
            .find(|(_, other)| currency.is_none() || other.is_none() || other == currency);
        if let Some((first, _)) = overlapping {
            violations.add(
                format!("rules[{index}].currency"),
                format!("overlaps the structuring rule rules[{first}]: at most one per currency"),
            );
        }
    }
}
