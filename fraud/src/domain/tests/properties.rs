//! Properties of the evaluation over any rule set and snapshot, valid or
//! not: it is a function of its inputs (the replay guarantee), more severe
//! rules never soften it, higher limits never harden it, and alerts never
//! change it.

use proptest::prelude::*;

use super::*;
use crate::domain::anomaly;

fn kind() -> impl Strategy<Value = TransactionKind> {
    prop::sample::select(TransactionKind::ALL.to_vec())
}

fn currency() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["USD", "EUR", "GBP", "JPY"]).prop_map(str::to_owned)
}

/// Amounts around the default limits, in cents.
fn amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![1i64..1_000, 1i64..2_000_000, 1i64..200_000_000].prop_map(cents)
}

fn seconds(max: u64) -> impl Strategy<Value = Duration> {
    (0..max).prop_map(Duration::from_secs)
}

fn snapshot_strategy() -> impl Strategy<Value = FeatureSnapshot> {
    let counts = (0i64..2_000, 0i64..20_000, 0i64..100, 0i64..6);
    let sums = (amount(), amount(), amount());
    let ages = (
        prop::option::of(seconds(10 * 86_400)),
        prop::option::of(seconds(10 * 86_400)),
    );
    let score = prop::option::of((-200_000i64..2_000_000).prop_map(|s| Decimal::new(s, 4)));
    let hits = prop::collection::vec("(account|customer):[0-9]", 0..3);
    (
        counts,
        sums,
        ages,
        score,
        hits,
        (any::<bool>(), amount(), currency(), kind(), 0u32..200),
    )
        .prop_map(
            |(
                (count_1h, count_more, distinct, structuring),
                (sum_1h, sum_24h, sum_7d),
                (account_age, kyc_age),
                anomaly_score,
                watchlist_hits,
                (first_time_payee, amount, currency, kind, history_size),
            )| FeatureSnapshot {
                count_1h,
                count_24h: count_1h + count_more,
                count_7d: count_1h + 2 * count_more,
                sum_1h,
                sum_24h,
                sum_7d,
                distinct_sources_24h: distinct,
                first_time_payee,
                account_age,
                kyc_age,
                anomaly_score,
                history_size,
                watchlist_hits,
                structuring_count_24h: structuring,
                amount,
                currency,
                kind,
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![
        Action::Approve,
        Action::Review,
        Action::Decline,
        Action::Alert,
    ])
}

/// Any rule, its parameters mostly present so that rules fire often.
fn rule_strategy() -> impl Strategy<Value = Rule> {
    let params = (
        prop::option::weighted(0.9, amount()),
        prop::option::weighted(0.9, 0i64..2_000),
        prop::option::weighted(
            0.9,
            prop::sample::select(vec![Window::H1, Window::H24, Window::D7]),
        ),
        prop::option::weighted(0.9, (1i64..200_000).prop_map(cents)),
        prop::option::weighted(0.9, seconds(5 * 86_400)),
    );
    let review = (
        prop::option::of(seconds(7 * 86_400)),
        prop::sample::select(vec![TimeoutAction::Approve, TimeoutAction::Decline]),
    );
    (
        "[a-z]{1,8}",
        prop::sample::select(RuleKind::ALL.to_vec()),
        action(),
        prop::option::weighted(0.3, currency()),
        params,
        review,
        prop::collection::vec(kind(), 0..3),
    )
        .prop_map(
            |(rule_id, kind, action, currency, params, review, applies_to)| {
                let (threshold, count_limit, window, band, min_age) = params;
                Rule {
                    currency,
                    threshold,
                    count_limit,
                    window,
                    band,
                    min_age,
                    review_deadline: review.0,
                    timeout_action: review.1,
                    applies_to,
                    ..Rule::new(&rule_id, kind, action)
                }
            },
        )
}

fn rule_set_strategy() -> impl Strategy<Value = RuleSet> {
    prop::collection::vec(rule_strategy(), 0..12).prop_map(rule_set)
}

proptest! {
    #[test]
    fn the_same_inputs_give_the_same_evaluation_even_after_a_storage_round_trip(
        rules in rule_set_strategy(),
        snapshot in snapshot_strategy(),
    ) {
        let evaluation = evaluate(&rules, &snapshot);
        prop_assert_eq!(&evaluate(&rules, &snapshot), &evaluation);
        let stored_rules: RuleSet =
            serde_json::from_str(&serde_json::to_string(&rules).expect("serializes")).expect("reads");
        let stored_snapshot: FeatureSnapshot =
            serde_json::from_value(serde_json::to_value(&snapshot).expect("serializes")).expect("reads");
        prop_assert_eq!(&stored_rules, &rules);
        prop_assert_eq!(&stored_snapshot, &snapshot);
        prop_assert_eq!(evaluate(&stored_rules, &stored_snapshot), evaluation);
    }

    #[test]
    fn the_outcome_is_the_most_severe_fired_action(
        rules in rule_set_strategy(),
        snapshot in snapshot_strategy(),
    ) {
        let evaluation = evaluate(&rules, &snapshot);
        let expected = evaluation.fired.iter().fold(Outcome::Approve, |outcome, rule| {
            outcome.max(match rule.action {
                Action::Decline => Outcome::Decline,
                Action::Review => Outcome::Review,
                Action::Approve | Action::Alert => Outcome::Approve,
            })
        });
        prop_assert_eq!(evaluation.outcome, expected);
        let alerts: Vec<_> =
            evaluation.fired.iter().filter(|rule| rule.action == Action::Alert).cloned().collect();
        prop_assert_eq!(evaluation.alerts, alerts);
    }

    #[test]
    fn adding_a_decline_rule_never_makes_the_outcome_less_severe(
        rules in rule_set_strategy(),
        extra in rule_strategy(),
        position in any::<prop::sample::Index>(),
        snapshot in snapshot_strategy(),
    ) {
        let before = evaluate(&rules, &snapshot).outcome;
        let mut stricter = rules.clone();
        let at = position.index(stricter.rules.len() + 1);
        stricter.rules.insert(at, Rule { action: Action::Decline, ..extra });
        prop_assert!(evaluate(&stricter, &snapshot).outcome >= before);
    }

    #[test]
    fn raising_a_limit_never_makes_the_outcome_more_severe(
        rules in rule_set_strategy(),
        position in any::<prop::sample::Index>(),
        raise in 1i64..1_000_000,
        snapshot in snapshot_strategy(),
    ) {
        prop_assume!(!rules.rules.is_empty());
        let before = evaluate(&rules, &snapshot).outcome;
        let mut looser = rules.clone();
        let rule = &mut looser.rules[position.index(rules.rules.len())];
        // A structuring threshold locates a band rather than setting a
        // limit: moving it can bring an amount into the band.
        if rule.kind != RuleKind::Structuring {
            rule.threshold = rule.threshold.map(|threshold| threshold + cents(raise));
        }
        rule.count_limit = rule.count_limit.map(|limit| limit + raise);
        prop_assert!(evaluate(&looser, &snapshot).outcome <= before);
    }

    #[test]
    fn an_alert_rule_never_changes_the_outcome_or_the_review_policy(
        rules in rule_set_strategy(),
        extra in rule_strategy(),
        position in any::<prop::sample::Index>(),
        snapshot in snapshot_strategy(),
    ) {
        let before = evaluate(&rules, &snapshot);
        let mut alerting = rules.clone();
        let at = position.index(alerting.rules.len() + 1);
        alerting.rules.insert(at, Rule { action: Action::Alert, ..extra });
        let after = evaluate(&alerting, &snapshot);
        prop_assert_eq!(after.outcome, before.outcome);
        prop_assert_eq!(after.review_deadline, before.review_deadline);
        prop_assert_eq!(after.timeout_action, before.timeout_action);
        prop_assert!(after.fired.len() <= before.fired.len() + 1);
    }

    #[test]
    fn an_empty_rule_set_approves_everything(snapshot in snapshot_strategy()) {
        let evaluation = evaluate(&rule_set(Vec::new()), &snapshot);
        prop_assert_eq!(evaluation.outcome, Outcome::Approve);
        prop_assert!(evaluation.fired.is_empty());
    }

    /// The benchmark: transfers of 0.01..5.00 USD among 20 accounts at up to
    /// 500 an hour per account, from accounts of any age, scored against a
    /// history of such amounts.
    #[test]
    fn an_ordinary_benchmark_transfer_is_approved_by_the_default_rule_set(
        amount in (1i64..=500).prop_map(cents),
        history in prop::collection::vec((1i64..=500).prop_map(cents), 0..100),
        count_1h in 1i64..=500,
        more_today in 0i64..5_000,
        distinct_sources_24h in 1i64..=19,
        first_time_payee in any::<bool>(),
        account_age in prop::option::of(seconds(86_400)),
    ) {
        let count_24h = count_1h + more_today;
        let snapshot = FeatureSnapshot {
            count_1h,
            count_24h,
            count_7d: count_24h,
            sum_1h: cents(500) * Decimal::from(count_1h),
            sum_24h: cents(500) * Decimal::from(count_24h),
            sum_7d: cents(500) * Decimal::from(count_24h),
            distinct_sources_24h,
            first_time_payee,
            account_age,
            kyc_age: None,
            anomaly_score: anomaly::score(amount, &history),
            history_size: u32::try_from(history.len()).expect("small"),
            amount,
            ..snapshot()
        };
        let evaluation = evaluate(&default_rule_set(), &snapshot);
        prop_assert_eq!(evaluation.outcome, Outcome::Approve, "{:?}", evaluation.fired);
        prop_assert!(evaluation.fired.is_empty());
    }
}
