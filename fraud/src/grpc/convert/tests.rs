//! Round trips through the proto types, and the violations of bad requests.

use std::time::Duration;

use corebank_platform::ErrorCode;

use super::*;
use crate::domain::{Outcome, RuleKind, TimeoutAction, Window, default_rule_set};

fn seconds(value: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: value,
        nanos: 0,
    }
}

fn snapshot() -> FeatureSnapshot {
    FeatureSnapshot {
        count_1h: 3,
        count_24h: 40,
        count_7d: 200,
        sum_1h: Decimal::new(750, 2),
        sum_24h: Decimal::new(10_000, 2),
        sum_7d: Decimal::new(50_000, 2),
        distinct_sources_24h: 2,
        first_time_payee: true,
        account_age: Some(Duration::from_secs(86_400)),
        kyc_age: None,
        anomaly_score: Some(Decimal::new(-12_345, 4)),
        history_size: 100,
        watchlist_hits: vec!["account:a".to_owned(), "customer:b".to_owned()],
        structuring_count_24h: 1,
        amount: Decimal::new(250, 2),
        currency: "USD".to_owned(),
        kind: TransactionKind::Withdrawal,
    }
}

/// A valid request of one velocity rule.
fn request() -> pb::UpdateRuleSetRequest {
    pb::UpdateRuleSetRequest {
        rules: vec![pb::Rule {
            rule_id: "velocity-1h".to_owned(),
            kind: pb::RuleKind::VelocityCount.into(),
            action: pb::FraudAction::Review.into(),
            count_limit: 100,
            window: pb::FeatureWindow::FeatureWindow1h.into(),
            review_deadline: Some(seconds(600)),
            timeout_action: pb::FraudAction::Approve.into(),
            applies_to: vec![pb::TransactionKind::Transfer.into()],
            ..pb::Rule::default()
        }],
        anomaly_history: 50,
        decline_watchlist_period: Some(seconds(86_400)),
        actor: "analyst-7".to_owned(),
        reason: "tighter velocity".to_owned(),
        idempotency_key: "k".to_owned(),
    }
}

#[test]
fn the_default_rule_set_survives_the_proto_round_trip() {
    let defaults = default_rule_set();
    let wire = rule_set_to_proto(&defaults);
    assert_eq!(wire.rules[0].threshold, "10000");
    assert_eq!(wire.rules[0].currency, "USD");
    assert_eq!(rule_set_from_proto(&wire), Ok(defaults));
}

#[test]
fn a_snapshot_survives_the_proto_round_trip_with_and_without_optional_features() {
    let full = snapshot();
    let wire = snapshot_to_proto(&full);
    assert_eq!(wire.anomaly_score, "-1.2345");
    assert_eq!(
        wire.amount.as_ref().map(|m| m.amount.as_str()),
        Some("2.50")
    );
    assert_eq!(snapshot_from_proto(&wire), Ok(full));
    let sparse = FeatureSnapshot {
        account_age: None,
        anomaly_score: None,
        watchlist_hits: Vec::new(),
        ..snapshot()
    };
    assert_eq!(snapshot_from_proto(&snapshot_to_proto(&sparse)), Ok(sparse));
}

#[test]
fn a_fired_rule_survives_the_proto_round_trip() {
    let fired = FiredRule {
        rule_id: "anomaly-score".to_owned(),
        kind: RuleKind::AnomalyScore,
        action: Action::Review,
        value: "12.5".to_owned(),
        threshold: "8".to_owned(),
    };
    assert_eq!(
        fired_rule_from_proto(&fired_rule_to_proto(&fired)),
        Ok(fired)
    );
    let unspecified = pb::FiredRule::default();
    let fields: Vec<_> = fired_rule_from_proto(&unspecified)
        .expect_err("no kind or action")
        .pairs()
        .into_iter()
        .map(|(field, _)| field.to_owned())
        .collect();
    assert_eq!(fields, ["kind", "action"]);
}

#[test]
fn every_enum_maps_both_ways() {
    for kind in RuleKind::ALL {
        assert_eq!(
            rule_kind_from_proto(rule_kind_to_proto(kind).into()),
            Ok(Some(kind))
        );
    }
    for action in [
        Action::Approve,
        Action::Review,
        Action::Decline,
        Action::Alert,
    ] {
        assert_eq!(
            action_from_proto(action_to_proto(action).into()),
            Ok(Some(action))
        );
    }
    for kind in TransactionKind::ALL {
        assert_eq!(
            transaction_kind_from_proto(transaction_kind_to_proto(kind).into()),
            Ok(kind)
        );
    }
    for window in [Window::H1, Window::H24, Window::D7] {
        assert_eq!(
            window_from_proto(window_to_proto(window).into()),
            Ok(Some(window))
        );
    }
    assert_eq!(outcome_to_proto(Outcome::Review), pb::FraudAction::Review);
    assert_eq!(rule_kind_from_proto(0), Ok(None));
    assert!(rule_kind_from_proto(99).is_err());
    assert!(transaction_kind_from_proto(0).is_err());
}

#[test]
fn a_valid_update_request_parses_into_the_rule_set_it_names() {
    let parsed = parse_update_rule_set(&request()).expect("valid");
    assert_eq!(parsed.anomaly_history, 50);
    assert_eq!(parsed.created_by, "analyst-7");
    let rule = &parsed.rules[0];
    assert_eq!(rule.kind, RuleKind::VelocityCount);
    assert_eq!(rule.count_limit, Some(100));
    assert_eq!(rule.window, Some(Window::H1));
    assert_eq!(rule.review_deadline, Some(Duration::from_secs(600)));
    assert_eq!(rule.timeout_action, TimeoutAction::Approve);
    assert_eq!(rule.applies_to, [TransactionKind::Transfer]);
}

#[test]
fn a_bad_update_request_reports_every_violation_by_proto_field_path() {
    let mut bad = request();
    bad.rules.push(pb::Rule {
        rule_id: "velocity-1h".to_owned(),
        kind: pb::RuleKind::AmountAbove.into(),
        action: 42,
        currency: "USD".to_owned(),
        threshold: "ten".to_owned(),
        review_deadline: Some(prost_types::Duration {
            seconds: 60,
            nanos: 5,
        }),
        applies_to: vec![0],
        ..pb::Rule::default()
    });
    bad.rules[0].window = 0;
    bad.rules[0].timeout_action = pb::FraudAction::Review.into();
    bad.anomaly_history = 0;
    bad.decline_watchlist_period = Some(seconds(-1));
    bad.actor = String::new();
    let found = parse_update_rule_set(&bad).expect_err("invalid");
    assert_eq!(
        found.pairs(),
        [
            (
                "rules[1].applies_to[0]",
                "is required: TRANSFER, DEPOSIT or WITHDRAWAL"
            ),
            ("rules[1].action", "is not a known fraud action"),
            (
                "rules[1].threshold",
                "must be a decimal string such as \"10000.00\""
            ),
            ("rules[1].review_deadline", "must be whole seconds"),
            ("decline_watchlist_period", "must not be negative"),
            ("rules[0].timeout_action", "must be APPROVE or DECLINE"),
            ("rules[0].window", "is required for VELOCITY_COUNT rules"),
            ("rules[1].rule_id", "duplicates rules[0].rule_id"),
            ("anomaly_history", "must be between 5 and 1000"),
            ("actor", "is required"),
        ]
    );
}

#[test]
fn violations_become_a_validation_error_with_one_field_violation_each() {
    let mut bad = request();
    bad.rules[0].count_limit = -3;
    bad.reason = String::new();
    let error = ApiError::from(parse_update_rule_set(&bad).expect_err("invalid"));
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    let fields: Vec<_> = error
        .violations()
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["rules[0].count_limit", "reason"]);
    assert_eq!(error.into_status().code(), tonic::Code::InvalidArgument);
}

#[test]
fn a_duration_must_be_whole_non_negative_seconds() {
    assert_eq!(parse_duration(None), Ok(None));
    assert_eq!(
        parse_duration(Some(&seconds(90))),
        Ok(Some(Duration::from_secs(90)))
    );
    assert!(parse_duration(Some(&seconds(-90))).is_err());
    let fraction = prost_types::Duration {
        seconds: 1,
        nanos: 500,
    };
    assert!(parse_duration(Some(&fraction)).is_err());
}
