//! Rule-set validation: every violation reported at once, by field path.

use super::*;

fn draft_of(rules: Vec<RuleDraft>) -> RuleSetDraft {
    RuleSetDraft {
        rules,
        ..RuleSetDraft::from(&default_rule_set())
    }
}

/// A valid USD amount rule as a draft.
fn amount_rule(id: &str) -> RuleDraft {
    RuleDraft {
        rule_id: id.to_owned(),
        kind: Some(RuleKind::AmountAbove),
        action: Some(Action::Review),
        currency: Some("USD".to_owned()),
        threshold: Some(Decimal::from(100)),
        ..RuleDraft::default()
    }
}

fn violations(draft: &RuleSetDraft) -> Vec<(String, String)> {
    validate(draft)
        .expect_err("the draft is invalid")
        .pairs()
        .into_iter()
        .map(|(field, message)| (field.to_owned(), message.to_owned()))
        .collect()
}

fn fields(draft: &RuleSetDraft) -> Vec<String> {
    violations(draft)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

#[test]
fn the_default_rule_set_is_valid_and_survives_validation_unchanged() {
    let defaults = default_rule_set();
    let validated = validate(&RuleSetDraft::from(&defaults)).expect("the defaults are valid");
    assert_eq!(
        validated.into_rule_set(defaults.version, defaults.created_at),
        defaults
    );
}

#[test]
fn an_empty_rule_set_is_valid() {
    assert!(validate(&draft_of(Vec::new())).is_ok());
}

#[test]
fn a_bad_draft_reports_every_violation_with_its_field_path() {
    let draft = RuleSetDraft {
        rules: vec![
            amount_rule("ok"),
            RuleDraft {
                rule_id: "Bad Id".to_owned(),
                ..RuleDraft::default()
            },
            RuleDraft {
                threshold: Some(Decimal::ZERO),
                currency: Some("usd".to_owned()),
                ..amount_rule("ok")
            },
        ],
        anomaly_history: 4,
        decline_watchlist_period: None,
        actor: " ".to_owned(),
        reason: String::new(),
    };
    let found = violations(&draft);
    let expected = [
        ("rules[1].rule_id", "must hold only a-z, 0-9, '-' and '_'"),
        ("rules[1].kind", "is required"),
        (
            "rules[1].action",
            "is required: APPROVE, REVIEW, DECLINE or ALERT",
        ),
        ("rules[2].rule_id", "duplicates rules[0].rule_id"),
        (
            "rules[2].currency",
            "must be a 3-letter uppercase ISO 4217 code",
        ),
        ("rules[2].threshold", "must be a positive decimal"),
        ("anomaly_history", "must be between 5 and 1000"),
        ("decline_watchlist_period", "is required"),
        ("actor", "is required"),
        ("reason", "is required"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(field, message)| ((*field).to_owned(), (*message).to_owned()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn each_kind_requires_its_parameters_and_refuses_the_others() {
    let velocity = RuleDraft {
        rule_id: "v".to_owned(),
        kind: Some(RuleKind::VelocityCount),
        action: Some(Action::Review),
        threshold: Some(Decimal::ONE),
        count_limit: Some(0),
        applies_to: vec![TransactionKind::Transfer],
        ..RuleDraft::default()
    };
    let new_account = RuleDraft {
        rule_id: "n".to_owned(),
        kind: Some(RuleKind::NewAccount),
        action: Some(Action::Review),
        threshold: Some(Decimal::ONE),
        ..RuleDraft::default()
    };
    assert_eq!(
        violations(&draft_of(vec![velocity, new_account])),
        [
            (
                "rules[0].threshold".to_owned(),
                "is not used by VELOCITY_COUNT rules".to_owned()
            ),
            (
                "rules[0].count_limit".to_owned(),
                "must be at least 1".to_owned()
            ),
            (
                "rules[0].window".to_owned(),
                "is required for VELOCITY_COUNT rules".to_owned()
            ),
            (
                "rules[1].min_age".to_owned(),
                "is required for NEW_ACCOUNT rules".to_owned()
            ),
            (
                "rules[1].currency".to_owned(),
                "is required: amount thresholds are per currency".to_owned()
            ),
        ]
    );
}

#[test]
fn a_velocity_rule_may_not_look_at_deposits() {
    for applies_to in [
        vec![],
        vec![TransactionKind::Deposit, TransactionKind::Transfer],
    ] {
        let rule = RuleDraft {
            rule_id: "v".to_owned(),
            kind: Some(RuleKind::VelocitySum),
            action: Some(Action::Decline),
            currency: Some("USD".to_owned()),
            threshold: Some(Decimal::from(1_000)),
            window: Some(Window::H24),
            applies_to,
            ..RuleDraft::default()
        };
        assert_eq!(fields(&draft_of(vec![rule])), ["rules[0].applies_to"]);
    }
}

#[test]
fn a_structuring_rule_needs_a_band_below_its_threshold_deposits_only_and_one_per_currency() {
    let structuring = RuleDraft {
        rule_id: "s".to_owned(),
        kind: Some(RuleKind::Structuring),
        action: Some(Action::Alert),
        currency: Some("USD".to_owned()),
        threshold: Some(Decimal::from(10_000)),
        band: Some(Decimal::from(10_000)),
        count_limit: Some(2),
        applies_to: vec![TransactionKind::Transfer],
        ..RuleDraft::default()
    };
    let every_currency = RuleDraft {
        rule_id: "t".to_owned(),
        currency: None,
        band: Some(Decimal::from(500)),
        applies_to: vec![TransactionKind::Deposit],
        ..structuring.clone()
    };
    let found = violations(&draft_of(vec![structuring, every_currency]));
    let fields: Vec<&str> = found.iter().map(|(field, _)| field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "rules[0].applies_to",
            "rules[0].band",
            "rules[1].currency",
            "rules[1].currency"
        ]
    );
    assert_eq!(found[1].1, "must be less than the threshold");
    assert!(
        found[3]
            .1
            .starts_with("overlaps the structuring rule rules[0]")
    );
}

#[test]
fn review_settings_belong_to_review_rules_and_stay_in_bounds() {
    let short = RuleDraft {
        review_deadline: Some(Duration::from_secs(59)),
        timeout_action: Some(Action::Alert),
        ..amount_rule("short")
    };
    let long = RuleDraft {
        review_deadline: Some(DAY * 8),
        ..amount_rule("long")
    };
    let declining = RuleDraft {
        action: Some(Action::Decline),
        review_deadline: Some(DAY),
        timeout_action: Some(Action::Approve),
        ..amount_rule("declining")
    };
    assert_eq!(
        violations(&draft_of(vec![short, long, declining])),
        [
            (
                "rules[0].review_deadline".to_owned(),
                "must be between 1 minute and 7 days".to_owned()
            ),
            (
                "rules[0].timeout_action".to_owned(),
                "must be APPROVE or DECLINE".to_owned()
            ),
            (
                "rules[1].review_deadline".to_owned(),
                "must be between 1 minute and 7 days".to_owned()
            ),
            (
                "rules[2].review_deadline".to_owned(),
                "only applies to REVIEW rules".to_owned()
            ),
            (
                "rules[2].timeout_action".to_owned(),
                "only applies to REVIEW rules".to_owned()
            ),
        ]
    );
}

#[test]
fn a_review_rule_times_out_as_requested_or_declines_by_default() {
    let approving = RuleDraft {
        timeout_action: Some(Action::Approve),
        review_deadline: Some(Duration::from_secs(60)),
        ..amount_rule("a")
    };
    let validated = validate(&draft_of(vec![approving, amount_rule("b")])).expect("valid");
    assert_eq!(validated.rules[0].timeout_action, TimeoutAction::Approve);
    assert_eq!(validated.rules[1].timeout_action, TimeoutAction::Decline);
}

#[test]
fn the_anomaly_history_is_bounded() {
    for (history, ok) in [(5, true), (1_000, true), (0, false), (1_001, false)] {
        let draft = RuleSetDraft {
            anomaly_history: history,
            ..draft_of(Vec::new())
        };
        assert_eq!(validate(&draft).is_ok(), ok, "{history}");
    }
}

#[test]
fn a_repeated_kind_in_applies_to_is_refused() {
    let rule = RuleDraft {
        applies_to: vec![TransactionKind::Transfer, TransactionKind::Transfer],
        ..amount_rule("r")
    };
    assert_eq!(fields(&draft_of(vec![rule])), ["rules[0].applies_to[1]"]);
}
