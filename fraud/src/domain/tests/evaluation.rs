//! Each rule kind and the default rule set, case by case.

use super::*;

fn evaluate_default(snapshot: &FeatureSnapshot) -> Evaluation {
    evaluate(&default_rule_set(), snapshot)
}

#[test]
fn a_quiet_transfer_is_approved_by_the_default_rule_set_with_nothing_fired() {
    let evaluation = evaluate_default(&snapshot());
    assert_eq!(evaluation.outcome, Outcome::Approve);
    assert!(evaluation.fired.is_empty());
}

#[test]
fn the_large_funding_deposit_of_a_new_account_is_approved() {
    let deposit = FeatureSnapshot {
        kind: TransactionKind::Deposit,
        amount: cents(100_000_000),
        count_1h: 1,
        sum_1h: cents(100_000_000),
        sum_24h: cents(100_000_000),
        sum_7d: cents(100_000_000),
        account_age: Some(Duration::from_secs(2)),
        anomaly_score: None,
        history_size: 0,
        ..snapshot()
    };
    let evaluation = evaluate_default(&deposit);
    assert_eq!(evaluation.outcome, Outcome::Approve);
    assert!(evaluation.fired.is_empty());
}

#[test]
fn a_transfer_above_ten_thousand_dollars_is_reviewed_and_declines_on_timeout() {
    let large = FeatureSnapshot {
        amount: cents(1_000_001),
        ..snapshot()
    };
    let evaluation = evaluate_default(&large);
    assert_eq!(evaluation.outcome, Outcome::Review);
    assert_eq!(fired_ids(&evaluation), ["amount-review-usd"]);
    assert_eq!(evaluation.fired[0].value, "10000.01");
    assert_eq!(evaluation.fired[0].threshold, "10000");
    assert_eq!(evaluation.timeout_action, TimeoutAction::Decline);
    assert_eq!(evaluation.review_deadline, None);
}

#[test]
fn exactly_the_limit_does_not_fire() {
    let at_limit = FeatureSnapshot {
        amount: cents(1_000_000),
        ..snapshot()
    };
    assert_eq!(evaluate_default(&at_limit).outcome, Outcome::Approve);
}

#[test]
fn a_transfer_above_a_million_is_declined_and_lists_both_amount_rules_in_order() {
    let huge = FeatureSnapshot {
        amount: cents(100_000_001),
        ..snapshot()
    };
    let evaluation = evaluate_default(&huge);
    assert_eq!(evaluation.outcome, Outcome::Decline);
    assert_eq!(
        fired_ids(&evaluation),
        ["amount-review-usd", "amount-decline-usd"]
    );
}

#[test]
fn thresholds_are_per_currency() {
    let euros = FeatureSnapshot {
        amount: cents(950_000),
        currency: "EUR".to_owned(),
        ..snapshot()
    };
    assert_eq!(fired_ids(&evaluate_default(&euros)), ["amount-review-eur"]);
    let yen = FeatureSnapshot {
        currency: "JPY".to_owned(),
        ..euros
    };
    assert_eq!(evaluate_default(&yen).outcome, Outcome::Approve);
}

#[test]
fn a_rule_looks_only_at_the_kinds_it_applies_to() {
    let large_deposit = FeatureSnapshot {
        amount: cents(50_000_000),
        kind: TransactionKind::Deposit,
        ..snapshot()
    };
    assert_eq!(evaluate_default(&large_deposit).outcome, Outcome::Approve);
    let large_withdrawal = FeatureSnapshot {
        kind: TransactionKind::Withdrawal,
        ..large_deposit
    };
    assert_eq!(evaluate_default(&large_withdrawal).outcome, Outcome::Review);
}

#[test]
fn velocity_fan_in_and_anomaly_limits_review() {
    let cases: [(&str, FeatureSnapshot); 4] = [
        (
            "velocity-count-1h",
            FeatureSnapshot {
                count_1h: 1_001,
                ..snapshot()
            },
        ),
        (
            "velocity-sum-24h-usd",
            FeatureSnapshot {
                sum_24h: cents(5_000_001),
                ..snapshot()
            },
        ),
        (
            "fan-in-24h",
            FeatureSnapshot {
                distinct_sources_24h: 51,
                ..snapshot()
            },
        ),
        (
            "anomaly-score",
            FeatureSnapshot {
                anomaly_score: Some(Decimal::new(80_001, 4)),
                ..snapshot()
            },
        ),
    ];
    for (rule_id, case) in cases {
        let evaluation = evaluate_default(&case);
        assert_eq!(evaluation.outcome, Outcome::Review, "{rule_id}");
        assert_eq!(fired_ids(&evaluation), [rule_id]);
    }
}

#[test]
fn no_anomaly_score_never_fires_the_anomaly_rule() {
    let unscored = FeatureSnapshot {
        anomaly_score: None,
        history_size: 2,
        ..snapshot()
    };
    assert_eq!(evaluate_default(&unscored).outcome, Outcome::Approve);
}

#[test]
fn only_a_first_payment_to_a_payee_counts_for_the_first_payee_rule() {
    let known = FeatureSnapshot {
        amount: cents(600_000),
        ..snapshot()
    };
    assert_eq!(evaluate_default(&known).outcome, Outcome::Approve);
    let first = FeatureSnapshot {
        first_time_payee: true,
        ..known
    };
    let evaluation = evaluate_default(&first);
    assert_eq!(fired_ids(&evaluation), ["first-payee-usd"]);
}

#[test]
fn a_watch_listed_customer_deposit_is_reviewed() {
    let deposit = FeatureSnapshot {
        kind: TransactionKind::Deposit,
        watchlist_hits: vec!["customer:1".to_owned(), "account:2".to_owned()],
        ..snapshot()
    };
    let evaluation = evaluate_default(&deposit);
    assert_eq!(evaluation.outcome, Outcome::Review);
    assert_eq!(evaluation.fired[0].value, "customer:1,account:2");
}

#[test]
fn a_third_deposit_just_under_the_report_raises_an_alert_and_goes_on() {
    let deposit = FeatureSnapshot {
        kind: TransactionKind::Deposit,
        amount: cents(950_000),
        structuring_count_24h: 3,
        ..snapshot()
    };
    let evaluation = evaluate_default(&deposit);
    assert_eq!(evaluation.outcome, Outcome::Approve);
    assert_eq!(fired_ids(&evaluation), ["structuring-usd"]);
    assert_eq!(evaluation.alerts, evaluation.fired);
    let second = FeatureSnapshot {
        structuring_count_24h: 2,
        ..deposit.clone()
    };
    assert!(evaluate_default(&second).alerts.is_empty());
    let outside_the_band = FeatureSnapshot {
        amount: cents(1_200_000),
        ..deposit
    };
    assert!(evaluate_default(&outside_the_band).alerts.is_empty());
}

#[test]
fn the_store_learns_the_structuring_band_from_the_rule_set() {
    let rules = default_rule_set();
    let band = rules
        .structuring_band("USD")
        .expect("a USD structuring rule");
    assert_eq!(band.lower(), Decimal::from(9_000));
    assert_eq!(band.threshold, Decimal::from(10_000));
    assert_eq!(rules.structuring_band("EUR"), None);
}

#[test]
fn a_young_account_moving_a_large_amount_is_reviewed_but_an_unknown_age_is_not() {
    let young = FeatureSnapshot {
        account_age: Some(Duration::from_secs(600)),
        amount: cents(150_000),
        ..snapshot()
    };
    let evaluation = evaluate_default(&young);
    assert_eq!(fired_ids(&evaluation), ["new-account-usd"]);
    assert_eq!(evaluation.fired[0].value, "600s; 1500.00");
    assert_eq!(evaluation.fired[0].threshold, "3600s; 1000");
    let unknown = FeatureSnapshot {
        account_age: None,
        ..young
    };
    assert_eq!(evaluate_default(&unknown).outcome, Outcome::Approve);
}

#[test]
fn the_shortest_deadline_wins_and_timeout_approves_only_if_every_review_says_so() {
    let review = |id: &str, deadline: Option<u64>, timeout: TimeoutAction| Rule {
        threshold: Some(Decimal::ONE),
        review_deadline: deadline.map(Duration::from_secs),
        timeout_action: timeout,
        ..Rule::new(id, RuleKind::AmountAbove, Action::Review)
    };
    let lenient = rule_set(vec![
        review("a", Some(7_200), TimeoutAction::Approve),
        review("b", None, TimeoutAction::Approve),
        review("c", Some(3_600), TimeoutAction::Approve),
    ]);
    let evaluation = evaluate(&lenient, &snapshot());
    assert_eq!(evaluation.review_deadline, Some(Duration::from_secs(3_600)));
    assert_eq!(evaluation.timeout_action, TimeoutAction::Approve);
    let mut strict = lenient.clone();
    strict.rules.push(review("d", None, TimeoutAction::Decline));
    assert_eq!(
        evaluate(&strict, &snapshot()).timeout_action,
        TimeoutAction::Decline
    );
}

#[test]
fn a_rule_missing_a_parameter_never_fires() {
    let incomplete = rule_set(vec![
        Rule::new("no-threshold", RuleKind::AmountAbove, Action::Decline),
        Rule::new("no-window", RuleKind::VelocityCount, Action::Decline),
    ]);
    assert_eq!(evaluate(&incomplete, &snapshot()).outcome, Outcome::Approve);
}
