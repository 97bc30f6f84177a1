//! corebank's saga types, declared with the vocabulary of
//! [`super::definition`]: transfers and withdrawals reserve and screen at the
//! same time, then post; deposits screen and credit. Every type finishes at the transaction
//! service, which shows the movement PENDING until then (or REVIEW while
//! the screen step waits).

use std::sync::LazyLock;

use corebank_proto::wire::{self, Direction};
use uuid::Uuid;

use super::definition::{
    COMPLETE_STEP, Command, FAIL_STEP, Failure, MARK_REVIEW_NOTICE, Notice, SCREEN_STEP,
    SagaDefinition, SagaType, StepDef, StepInput, reason,
};

impl SagaType {
    /// The declared steps of this saga type.
    pub fn definition(self) -> &'static SagaDefinition {
        match self {
            Self::Transfer => &TRANSFER,
            Self::Deposit => &DEPOSIT,
            Self::Withdrawal => &WITHDRAWAL,
        }
    }
}

fn source(input: &StepInput<'_>) -> Uuid {
    input.data.source_account_id.unwrap_or_default()
}

fn reserve_command_id(input: &StepInput<'_>) -> String {
    wire::command_id(input.saga_id, RESERVE, Direction::Forward)
}

const RESERVE: &str = "reserve";

fn reserve() -> StepDef {
    StepDef::new(RESERVE, wire::service::ACCOUNT, |input| {
        Command::ReserveFunds {
            account_id: source(input),
            amount: input.data.amount,
            currency: input.data.currency.clone(),
        }
    })
    .compensated_by(|input| Command::ReleaseFunds {
        account_id: source(input),
        reserve_command_id: reserve_command_id(input),
    })
}

fn post() -> StepDef {
    StepDef::new("post", wire::service::ACCOUNT, |input| {
        Command::PostTransfer {
            source_account_id: source(input),
            destination_account_id: input.data.destination_account_id,
            reserve_command_id: reserve_command_id(input),
        }
    })
    .pivot()
}

/// Fraud screening: changes no money, so nothing to compensate. A REVIEW
/// answer parks the saga (the transaction shows REVIEW); silence fails closed.
fn screen() -> StepDef {
    StepDef::new(SCREEN_STEP, wire::service::FRAUD, |input| {
        Command::ScreenTransaction {
            kind: input.kind,
            source_account_id: input.data.source_account_id,
            destination_account_id: input.data.destination_account_id,
            amount: input.data.amount,
            currency: input.data.currency.clone(),
            requested_at: input.requested_at,
        }
    })
    .may_wait(
        reason::REVIEW_EXPIRED,
        Some(Notice {
            name: MARK_REVIEW_NOTICE,
            participant: wire::service::TRANSACTION,
            build: |input| Command::MarkReview {
                step: SCREEN_STEP,
                deadline: input.parked_until.unwrap_or(input.requested_at),
            },
        }),
    )
    .exhausted_with(reason::SCREENING_UNAVAILABLE)
}

fn complete() -> StepDef {
    StepDef::new(COMPLETE_STEP, wire::service::TRANSACTION, |input| {
        Command::CompleteTransaction {
            journal_id: input.data.journal_id.clone().unwrap_or_default(),
        }
    })
}

fn fail() -> StepDef {
    StepDef::new(FAIL_STEP, wire::service::TRANSACTION, |input| {
        let failure = input.failure.cloned().unwrap_or(Failure {
            reason_code: reason::REJECTED.to_owned(),
            detail: String::new(),
        });
        Command::FailTransaction {
            reason_code: failure.reason_code,
            detail: failure.detail,
        }
    })
}

/// The transfer's steps: reserve on the source and screen at the same time
/// (neither needs the other's answer), then post (the pivot) once both
/// succeeded. An approved transfer cannot then bounce on funds; a decline
/// releases the hold, or leaves a tombstone the late reserve is refused on.
pub fn transfer_steps() -> Vec<StepDef> {
    vec![reserve(), screen().alongside_previous(), post()]
}

/// The withdrawal's steps: as a transfer, crediting the settlement account.
pub fn withdrawal_steps() -> Vec<StepDef> {
    transfer_steps()
}

/// The deposit's steps: screen, then credit from the settlement account (the pivot).
pub fn deposit_steps() -> Vec<StepDef> {
    vec![
        screen(),
        StepDef::new("deposit", wire::service::ACCOUNT, |input| {
            Command::PostDeposit {
                account_id: input.data.destination_account_id.unwrap_or_default(),
                amount: input.data.amount,
                currency: input.data.currency.clone(),
            }
        })
        .pivot(),
    ]
}

static TRANSFER: LazyLock<SagaDefinition> =
    LazyLock::new(|| SagaDefinition::new(SagaType::Transfer, transfer_steps(), complete(), fail()));
static WITHDRAWAL: LazyLock<SagaDefinition> = LazyLock::new(|| {
    SagaDefinition::new(SagaType::Withdrawal, withdrawal_steps(), complete(), fail())
});
static DEPOSIT: LazyLock<SagaDefinition> =
    LazyLock::new(|| SagaDefinition::new(SagaType::Deposit, deposit_steps(), complete(), fail()));

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use rust_decimal::Decimal;

    use super::super::definition::SagaData;
    use super::*;

    fn data() -> SagaData {
        SagaData {
            source_account_id: Some(Uuid::now_v7()),
            destination_account_id: Some(Uuid::now_v7()),
            amount: Decimal::new(12550, 2),
            currency: "USD".to_owned(),
            hold_id: None,
            journal_id: None,
        }
    }

    #[test]
    fn every_saga_type_round_trips_through_its_name_and_has_one_pivot() {
        for kind in SagaType::ALL {
            assert_eq!(SagaType::parse(kind.as_str()), Some(kind));
            let definition = kind.definition();
            assert_eq!(definition.saga_type, kind);
            assert!(definition.pivot_index().is_some());
        }
        assert_eq!(SagaType::parse("loan"), None);
    }

    fn input(data: &SagaData) -> StepInput<'_> {
        StepInput {
            kind: SagaType::Transfer,
            saga_id: Uuid::now_v7(),
            transaction_id: Uuid::now_v7(),
            data,
            failure: None,
            requested_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
            parked_until: None,
        }
    }

    #[test]
    fn a_transfer_reserves_and_screens_together_then_posts_and_only_the_reserve_is_compensable() {
        let definition = SagaType::Transfer.definition();
        let names: Vec<_> = definition.steps.iter().map(|step| step.name).collect();
        assert_eq!(names, ["reserve", "screen", "post"]);
        assert_eq!(definition.group(0), 0..2);
        assert_eq!(definition.group(1), 0..2);
        assert_eq!(definition.group(2), 2..3);
        assert_eq!(definition.pivot_index(), Some(2));
        assert!(definition.steps[0].compensation.is_some());
        assert!(definition.steps[1].compensation.is_none());
        assert!(definition.before_pivot(1));
        assert!(!definition.before_pivot(2));
    }

    #[test]
    fn withdrawals_and_deposits_are_screened_before_their_pivot() {
        let withdrawal = SagaType::Withdrawal.definition();
        let names: Vec<_> = withdrawal.steps.iter().map(|step| step.name).collect();
        assert_eq!(names, ["reserve", "screen", "post"]);
        assert_eq!(withdrawal.group(1), 0..2);
        let deposit = SagaType::Deposit.definition();
        let names: Vec<_> = deposit.steps.iter().map(|step| step.name).collect();
        assert_eq!(names, ["screen", "deposit"]);
        assert_eq!(deposit.group(0), 0..1);
        assert_eq!(deposit.pivot_index(), Some(1));
    }

    #[test]
    fn the_screen_step_may_wait_fails_closed_and_announces_its_review() {
        let screen = &SagaType::Transfer.definition().steps[1];
        assert_eq!(screen.participant, "fraud");
        assert!(screen.may_wait);
        assert_eq!(screen.wait_expired_reason, "REVIEW_EXPIRED");
        assert_eq!(screen.exhausted_reason, Some("SCREENING_UNAVAILABLE"));
        let notice = screen.on_wait.as_ref().expect("announces the wait");
        assert_eq!(notice.participant, "transaction");
        let data = data();
        let deadline = DateTime::from_timestamp(1_700_000_600, 0).expect("valid time");
        let parked = StepInput {
            parked_until: Some(deadline),
            ..input(&data)
        };
        assert_eq!(
            (notice.build)(&parked),
            Command::MarkReview {
                step: "screen",
                deadline
            }
        );
        let Command::ScreenTransaction {
            kind, requested_at, ..
        } = (screen.forward)(&parked)
        else {
            panic!("the screen step screens");
        };
        assert_eq!(
            (kind, requested_at),
            (SagaType::Transfer, parked.requested_at)
        );
    }

    #[test]
    fn steps_cannot_wait_by_default_and_time_out_with_timed_out() {
        let reserve = reserve();
        assert!(!reserve.may_wait);
        assert_eq!(reserve.exhausted_reason, None);
        assert!(reserve.on_wait.is_none());
    }

    #[test]
    #[should_panic(expected = "before the pivot")]
    fn a_definition_whose_pivot_may_wait_is_refused() {
        SagaDefinition::new(
            SagaType::Transfer,
            vec![reserve(), post().may_wait(reason::WAIT_EXPIRED, None)],
            complete(),
            fail(),
        );
    }

    #[test]
    fn the_release_names_the_reserve_command_it_undoes() {
        let data = data();
        let input = input(&data);
        let saga_id = input.saga_id;
        let release = (SagaType::Transfer.definition().steps[0]
            .compensation
            .expect("compensable"))(&input);
        assert_eq!(
            release,
            Command::ReleaseFunds {
                account_id: data.source_account_id.expect("source"),
                reserve_command_id: format!("{saga_id}:reserve:forward"),
            }
        );
    }

    #[test]
    fn a_withdrawal_posts_to_the_settlement_account() {
        let data = SagaData {
            destination_account_id: None,
            ..data()
        };
        let post = (SagaType::Withdrawal.definition().steps[2].forward)(&input(&data));
        assert!(matches!(
            post,
            Command::PostTransfer {
                destination_account_id: None,
                ..
            }
        ));
    }

    #[test]
    fn the_amount_is_stored_as_a_decimal_string() {
        let data = data();
        let json = serde_json::to_value(&data).expect("serializes");
        assert_eq!(json["amount"], "125.50");
        let back: SagaData = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, data);
    }

    #[test]
    #[should_panic(expected = "before the pivot")]
    fn a_parallel_group_holding_the_pivot_is_refused() {
        SagaDefinition::new(
            SagaType::Transfer,
            vec![reserve(), post().alongside_previous()],
            complete(),
            fail(),
        );
    }

    #[test]
    #[should_panic(expected = "at most one compensable step")]
    fn a_parallel_group_of_two_compensable_steps_is_refused() {
        let mut second = reserve().alongside_previous();
        second.name = "reserve_again";
        SagaDefinition::new(
            SagaType::Transfer,
            vec![reserve(), second, post()],
            complete(),
            fail(),
        );
    }

    #[test]
    #[should_panic(expected = "at most one step that may wait")]
    fn a_parallel_group_of_two_waiting_steps_is_refused() {
        let mut second = screen().alongside_previous();
        second.name = "screen_again";
        second.on_wait = None;
        SagaDefinition::new(
            SagaType::Transfer,
            vec![screen(), second, post()],
            complete(),
            fail(),
        );
    }

    #[test]
    #[should_panic(expected = "no step before it")]
    fn a_first_step_alongside_nothing_is_refused() {
        SagaDefinition::new(
            SagaType::Transfer,
            vec![reserve().alongside_previous(), post()],
            complete(),
            fail(),
        );
    }

    #[test]
    #[should_panic(expected = "unique")]
    fn a_definition_with_duplicate_step_names_is_refused() {
        SagaDefinition::new(
            SagaType::Transfer,
            vec![reserve(), reserve()],
            complete(),
            fail(),
        );
    }
}
