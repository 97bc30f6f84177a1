//! The transaction domain: validation, statuses and their transitions.

use super::*;
use TransactionStatus::*;

fn fields(violations: Violations) -> Vec<String> {
    violations
        .into_error()
        .violations()
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

fn transfer<'a>(
    source: &'a str,
    destination: &'a str,
    currency: &'a str,
    amount: &'a str,
) -> NewTransactionInput<'a> {
    NewTransactionInput {
        kind: TransactionKind::Transfer,
        source: Some(("source_account_id", source)),
        destination: Some(("destination_account_id", destination)),
        amount: Some(MoneyInput { currency, amount }),
        description: "rent",
    }
}

#[test]
fn the_happy_path_moves_forward_to_one_terminal_status() {
    assert_eq!(Pending.transition(Processing), Ok(Move::Changed));
    assert_eq!(Processing.transition(Completed), Ok(Move::Changed));
    assert_eq!(Processing.transition(Failed), Ok(Move::Changed));
    assert_eq!(Processing.transition(Review), Ok(Move::Changed));
    assert_eq!(Review.transition(Completed), Ok(Move::Changed));
}

#[test]
fn a_review_is_entered_from_pending_or_processing_once_and_ends_either_way() {
    assert_eq!(Pending.transition(Review), Ok(Move::Changed));
    assert_eq!(Processing.transition(Review), Ok(Move::Changed));
    assert_eq!(Review.transition(Review), Ok(Move::Unchanged));
    assert_eq!(Review.transition(Failed), Ok(Move::Changed));
    assert_eq!(Review.transition(Completed), Ok(Move::Changed));
}

#[test]
fn a_late_mark_review_leaves_a_terminal_transaction_alone() {
    for from in [Completed, Failed] {
        assert_eq!(from.transition(Review), Ok(Move::Unchanged), "{from:?}");
    }
}

#[test]
fn a_transaction_may_end_without_having_been_marked_processing() {
    assert_eq!(Pending.transition(Completed), Ok(Move::Changed));
    assert_eq!(Pending.transition(Failed), Ok(Move::Changed));
}

#[test]
fn a_late_mark_processing_changes_nothing() {
    for from in [Processing, Review, Completed, Failed] {
        assert_eq!(from.transition(Processing), Ok(Move::Unchanged), "{from:?}");
    }
}

#[test]
fn ending_the_same_way_twice_is_harmless() {
    assert_eq!(Completed.transition(Completed), Ok(Move::Unchanged));
    assert_eq!(Failed.transition(Failed), Ok(Move::Unchanged));
}

#[test]
fn terminal_statuses_never_change() {
    for from in [Completed, Failed] {
        for to in [Pending, Processing, Review, Completed, Failed] {
            assert_ne!(from.transition(to), Ok(Move::Changed), "{from:?} -> {to:?}");
        }
    }
    assert_eq!(
        Completed.transition(Failed),
        Err(IllegalTransition {
            from: Completed,
            to: Failed
        })
    );
    assert_eq!(
        Failed.transition(Completed),
        Err(IllegalTransition {
            from: Failed,
            to: Completed
        })
    );
}

#[test]
fn nothing_goes_back_to_pending() {
    assert_eq!(Pending.transition(Pending), Ok(Move::Unchanged));
    for from in [Processing, Review, Completed, Failed] {
        assert!(from.transition(Pending).is_err(), "{from:?}");
    }
}

#[test]
fn only_completed_and_failed_are_terminal() {
    let terminal: Vec<_> = [Pending, Processing, Review, Completed, Failed]
        .into_iter()
        .filter(|status| status.is_terminal())
        .collect();
    assert_eq!(terminal, [Completed, Failed]);
}

#[test]
fn statuses_and_kinds_round_trip_through_their_names() {
    for status in [Pending, Processing, Review, Completed, Failed] {
        assert_eq!(TransactionStatus::parse(status.as_str()), Some(status));
    }
    for kind in [
        TransactionKind::Transfer,
        TransactionKind::Deposit,
        TransactionKind::Withdrawal,
    ] {
        assert_eq!(TransactionKind::parse(kind.as_str()), Some(kind));
    }
}

#[test]
fn a_valid_transfer_parses() {
    let (a, b) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let mut violations = Violations::default();
    let new = NewTransaction::parse(
        transfer(&a, &b, "USD", "125.50"),
        AmountLimits::default(),
        &mut violations,
    )
    .unwrap();
    assert_eq!(new.amount, Decimal::new(12550, 2));
    assert_eq!(new.currency.code(), "USD");
    assert_eq!(new.source_account_id.unwrap().to_string(), a);
}

#[test]
fn every_invalid_field_of_a_transfer_is_named() {
    let mut violations = Violations::default();
    let mut input = transfer("nope", "", "usd", "-1");
    let long = "x".repeat(501);
    input.description = &long;
    assert!(NewTransaction::parse(input, AmountLimits::default(), &mut violations).is_none());
    assert_eq!(
        fields(violations),
        [
            "source_account_id",
            "destination_account_id",
            "amount.currency",
            "amount.amount",
            "description"
        ]
    );
}

#[test]
fn a_transfer_to_the_same_account_is_refused() {
    let a = Uuid::now_v7().to_string();
    let mut violations = Violations::default();
    assert!(
        NewTransaction::parse(
            transfer(&a, &a, "USD", "1"),
            AmountLimits::default(),
            &mut violations
        )
        .is_none()
    );
    assert_eq!(fields(violations), ["destination_account_id"]);
}

#[test]
fn amounts_follow_the_currency_exponent_and_the_limit() {
    let (a, b) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let limits = AmountLimits {
        max: Decimal::from(100),
    };
    for (currency, amount) in [
        ("USD", "1.005"),
        ("JPY", "1.5"),
        ("USD", "0"),
        ("USD", "100.01"),
    ] {
        let mut violations = Violations::default();
        assert!(
            NewTransaction::parse(transfer(&a, &b, currency, amount), limits, &mut violations)
                .is_none()
        );
        assert_eq!(fields(violations), ["amount.amount"], "{currency} {amount}");
    }
}

#[test]
fn a_missing_amount_is_named() {
    let mut violations = Violations::default();
    let input = NewTransactionInput {
        kind: TransactionKind::Deposit,
        source: None,
        destination: Some(("account_id", "")),
        amount: None,
        description: "",
    };
    assert!(NewTransaction::parse(input, AmountLimits::default(), &mut violations).is_none());
    assert_eq!(fields(violations), ["account_id", "amount"]);
}

#[test]
fn a_wait_is_between_zero_and_thirty_seconds() {
    assert_eq!(parse_wait(0, 0), Ok(Duration::ZERO));
    assert_eq!(parse_wait(30, 0), Ok(MAX_WAIT));
    assert!(parse_wait(30, 1).is_err());
    assert!(parse_wait(-1, 0).is_err());
    assert!(parse_wait(0, -5).is_err());
}

#[test]
fn a_snapshot_of_an_earlier_status_hides_the_outcome() {
    let now = Utc::now();
    let failed = Transaction {
        transaction_id: Uuid::now_v7(),
        kind: TransactionKind::Withdrawal,
        status: Failed,
        source_account_id: Some(Uuid::now_v7()),
        destination_account_id: None,
        currency: Currency::parse("EUR").unwrap(),
        amount: Decimal::ONE,
        description: String::new(),
        failure_reason: "INSUFFICIENT_FUNDS".to_owned(),
        failure_detail: "balance 0.00".to_owned(),
        journal_id: String::new(),
        created_at: now,
        updated_at: now,
    };
    let earlier = failed.as_of(Processing, now);
    assert_eq!(earlier.status, Processing);
    assert!(earlier.failure_reason.is_empty());
    assert_eq!(failed.as_of(Failed, now), failed);
}

#[test]
fn a_failure_always_has_a_reason_code() {
    assert_eq!(
        failure_reason_code("INSUFFICIENT_FUNDS"),
        "INSUFFICIENT_FUNDS"
    );
    assert_eq!(failure_reason_code(" "), "UNKNOWN");
    assert_eq!(failure_reason_code(&"X".repeat(100)).len(), 64);
}
