//! Event by event, one step at a time: the happy paths, refusals before and
//! at the pivot, stale and duplicate replies, silence before and after the
//! pivot, and the stored names of every position.

use super::*;

#[test]
fn a_sequential_transfer_starts_by_reserving_and_sends_nothing_else() {
    let run = Run::sequential(SagaType::Transfer);
    assert_eq!(run.steps_sent(), [("reserve", Direction::Forward)]);
    assert_eq!(run.sent[0].participant, "account");
    assert_eq!(
        run.sent[0].command_id,
        format!("{}:reserve:forward", run.saga.saga_id)
    );
    assert_eq!(run.saga.state, SagaState::Running);
    assert_eq!(run.saga.attempt, 1);
    assert_eq!(
        run.saga.next_attempt_at,
        Some(epoch() + chrono::Duration::seconds(1))
    );
    assert_eq!(run.events(), ["started"]);
}

#[test]
fn a_happy_transfer_reserves_screens_posts_and_completes_with_the_journal() {
    let mut run = Run::sequential(SagaType::Transfer);
    let screen = only(run.succeed());
    assert_eq!((screen.step, screen.participant), ("screen", "fraud"));
    assert!(matches!(
        screen.command,
        Command::ScreenTransaction {
            kind: SagaType::Transfer,
            requested_at,
            ..
        } if requested_at == epoch()
    ));
    let post = only(run.succeed());
    assert_eq!(post.step, "post");
    assert!(matches!(
        post.command,
        Command::PostTransfer {
            destination_account_id: Some(_),
            ..
        }
    ));
    assert_eq!(run.saga.data.hold_id.as_deref(), Some("hold-1"));
    let complete = only(run.succeed());
    assert_eq!(
        complete.command,
        Command::CompleteTransaction {
            journal_id: "journal-1".to_owned()
        }
    );
    assert!(run.succeed().is_empty());
    assert_eq!(run.saga.state, SagaState::Completed);
    assert_eq!(run.saga.next_attempt_at, None);
    assert_eq!(
        run.events(),
        [
            "started",
            "succeeded",
            "succeeded",
            "succeeded",
            "completed"
        ]
    );
    let steps: Vec<_> = run.log.iter().map(|entry| entry.step).collect();
    assert_eq!(steps, ["reserve", "reserve", "screen", "post", "complete"]);
}

#[test]
fn a_refused_reserve_fails_the_transaction_without_releasing_anything() {
    let mut run = Run::sequential(SagaType::Transfer);
    let fail = only(run.reject("INSUFFICIENT_FUNDS"));
    assert_eq!(
        fail.command,
        Command::FailTransaction {
            reason_code: "INSUFFICIENT_FUNDS".to_owned(),
            detail: "refused".to_owned()
        }
    );
    assert_eq!(run.saga.state, SagaState::Compensating);
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Failed);
    assert!(
        !run.steps_sent()
            .contains(&("reserve", Direction::Compensate))
    );
    assert_eq!(
        run.saga.failure.as_ref().map(|f| f.reason_code.as_str()),
        Some("INSUFFICIENT_FUNDS")
    );
    assert_eq!(run.events(), ["started", "rejected", "failed"]);
}

#[test]
fn a_refused_post_releases_the_hold_then_fails_the_transaction() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.succeed();
    let release = only(run.reject("ACCOUNT_FROZEN"));
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert!(matches!(release.command, Command::ReleaseFunds { .. }));
    let fail = only(run.succeed());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "ACCOUNT_FROZEN")
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
    assert_eq!(
        run.events(),
        [
            "started",
            "succeeded",
            "succeeded",
            "rejected",
            "succeeded",
            "compensated"
        ]
    );
}

#[test]
fn a_reply_to_another_command_changes_nothing() {
    let mut run = Run::sequential(SagaType::Transfer);
    let stale = format!("{}:screen:forward", run.saga.saga_id);
    let refused = run.apply(Event::Reply {
        command_id: stale,
        outcome: ReplyOutcome::Succeeded {
            hold_id: None,
            journal_id: None,
        },
    });
    assert!(matches!(refused, Err(Refusal::StaleReply { .. })));
}

#[test]
fn a_duplicate_reply_applies_once() {
    let mut run = Run::sequential(SagaType::Transfer);
    let reserve = run.awaited();
    run.succeed();
    let duplicate = run.apply(Event::Reply {
        command_id: reserve,
        outcome: ReplyOutcome::Succeeded {
            hold_id: None,
            journal_id: None,
        },
    });
    assert!(matches!(duplicate, Err(Refusal::StaleReply { .. })));
    assert_eq!(run.saga.position, Position::Forward(1), "screening");
}

#[test]
fn a_silent_step_is_re_sent_with_the_same_command_id_and_growing_waits() {
    let mut run = Run::sequential(SagaType::Transfer);
    let first = run.sent[0].clone();
    let second = only(run.time_out());
    let waited_once = run.saga.next_attempt_at.expect("timer") - run.now;
    let third = only(run.time_out());
    let waited_twice = run.saga.next_attempt_at.expect("timer") - run.now;
    assert_eq!(first.command_id, second.command_id);
    assert_eq!(second.command_id, third.command_id);
    assert_eq!((second.attempt, third.attempt), (2, 3));
    assert_eq!(waited_once, chrono::Duration::milliseconds(1050));
    assert_eq!(waited_twice, chrono::Duration::milliseconds(1100));
    assert_eq!(run.events(), ["started", "retried", "retried"]);
}

#[test]
fn a_reserve_silent_past_its_attempts_is_released_anyway_and_times_out() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.time_out();
    run.time_out();
    let release = only(run.time_out());
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert_eq!(run.saga.state, SagaState::Compensating);
    let fail = only(run.succeed());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "TIMED_OUT")
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
    assert_eq!(
        run.events(),
        [
            "started",
            "retried",
            "retried",
            "timed_out",
            "succeeded",
            "compensated"
        ]
    );
}

#[test]
fn a_silent_post_is_retried_forever_and_flagged_for_an_operator() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.succeed();
    for _ in 0..20 {
        let command = only(run.time_out());
        assert_eq!(
            (command.step, command.direction),
            ("post", Direction::Forward)
        );
    }
    assert_eq!(run.saga.state, SagaState::Running);
    assert!(run.saga.requires_attention);
    let capped = run.saga.next_attempt_at.expect("timer") - run.now;
    assert_eq!(capped, chrono::Duration::seconds(2));
    run.succeed();
    assert!(!run.saga.requires_attention, "progress clears the flag");
}

#[test]
fn a_saga_is_not_timed_out_before_its_deadline() {
    let run = Run::sequential(SagaType::Transfer);
    let early = run.engine().apply(&run.saga, Event::TimedOut, epoch(), 0.5);
    assert_eq!(early, Err(Refusal::NotDue));
}

#[test]
fn a_screened_deposit_that_is_refused_fails_and_a_silent_one_never_gives_up() {
    let mut refused = Run::start(SagaType::Deposit);
    assert!(matches!(
        refused.sent[0].command,
        Command::ScreenTransaction {
            kind: SagaType::Deposit,
            source_account_id: None,
            ..
        }
    ));
    let deposit = only(refused.succeed());
    assert!(matches!(deposit.command, Command::PostDeposit { .. }));
    only(refused.reject("ACCOUNT_CLOSED"));
    refused.succeed();
    assert_eq!(refused.saga.state, SagaState::Failed);

    let mut silent = Run::start(SagaType::Deposit);
    silent.succeed();
    for _ in 0..10 {
        only(silent.time_out());
    }
    assert_eq!(silent.saga.state, SagaState::Running);
    assert!(silent.saga.requires_attention);
}

#[test]
fn a_withdrawal_reserves_screens_then_posts_to_the_settlement_account() {
    let mut run = Run::sequential(SagaType::Withdrawal);
    run.succeed();
    let post = only(run.succeed());
    assert!(matches!(
        post.command,
        Command::PostTransfer {
            destination_account_id: None,
            ..
        }
    ));
    run.succeed();
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Completed);
}

#[test]
fn a_refused_compensation_stays_put_and_asks_for_an_operator() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.succeed();
    run.reject("ACCOUNT_FROZEN");
    assert!(run.reject("HOLD_NOT_FOUND").is_empty());
    assert_eq!(run.saga.position, Position::Compensate(0));
    assert!(run.saga.requires_attention);
}

#[test]
fn every_position_round_trips_through_its_stored_name() {
    let config = config();
    let engine = Engine::new(SagaType::Transfer.definition(), &config);
    for position in [
        Position::Forward(0),
        Position::Forward(1),
        Position::Forward(2),
        Position::Compensate(0),
        Position::Complete,
        Position::Fail { compensated: true },
        Position::Fail { compensated: false },
    ] {
        let (step, direction) = engine.step_at(position);
        let compensated = matches!(position, Position::Fail { compensated: true });
        assert_eq!(
            position_of(engine.definition, step.name, direction, compensated),
            Some(position)
        );
    }
    assert_eq!(
        position_of(engine.definition, "mark_review", Direction::Forward, false),
        None
    );
}
