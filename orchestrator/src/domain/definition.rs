//! Saga types as data: each is a declared list of steps (a command to a
//! participant, its optional compensation, whether it is the pivot) plus one
//! finish step per outcome. The engine in [`super::engine`] runs any of them.

use std::sync::LazyLock;
use std::time::Duration;

use corebank_proto::wire::{self, Direction};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Step name of the fire-and-forget command sent when a saga starts.
pub const ANNOUNCE_STEP: &str = "mark_processing";
/// Step name of the success finish.
pub const COMPLETE_STEP: &str = "complete";
/// Step name of the failure finish.
pub const FAIL_STEP: &str = "fail";

/// The kinds of money movement the orchestrator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaType {
    Transfer,
    Deposit,
    Withdrawal,
}

impl SagaType {
    pub const ALL: [SagaType; 3] = [SagaType::Transfer, SagaType::Deposit, SagaType::Withdrawal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The declared steps of this saga type.
    pub fn definition(self) -> &'static SagaDefinition {
        match self {
            Self::Transfer => &TRANSFER,
            Self::Deposit => &DEPOSIT,
            Self::Withdrawal => &WITHDRAWAL,
        }
    }
}

/// What a saga carries between steps; stored as jsonb, the amount as a
/// decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaData {
    /// Debited account; none for a deposit.
    pub source_account_id: Option<Uuid>,
    /// Credited account; none for a withdrawal (the settlement account).
    pub destination_account_id: Option<Uuid>,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: String,
    /// Set by a successful reserve.
    #[serde(default)]
    pub hold_id: Option<String>,
    /// Set by a successful post or deposit.
    #[serde(default)]
    pub journal_id: Option<String>,
}

/// Why a saga did not complete: a participant's stable reason code
/// (`INSUFFICIENT_FUNDS`), [`TIMED_OUT`](reason::TIMED_OUT) or [`ABORTED`](reason::ABORTED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason_code: String,
    pub detail: String,
}

/// Reason codes the orchestrator itself gives.
pub mod reason {
    /// A step before the pivot ran out of attempts without an answer.
    pub const TIMED_OUT: &str = "TIMED_OUT";
    /// An operator aborted the saga.
    pub const ABORTED: &str = "ABORTED";
    /// A participant refused without saying why.
    pub const REJECTED: &str = "REJECTED";
}

/// A command the orchestrator sends, without its envelope: the adapter adds
/// the command id, saga id and transaction id and encodes it as protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    MarkProcessing,
    ReserveFunds {
        account_id: Uuid,
        amount: Decimal,
        currency: String,
    },
    ReleaseFunds {
        account_id: Uuid,
        reserve_command_id: String,
    },
    PostTransfer {
        source_account_id: Uuid,
        /// `None`: the settlement account (a withdrawal).
        destination_account_id: Option<Uuid>,
        reserve_command_id: String,
    },
    PostDeposit {
        account_id: Uuid,
        amount: Decimal,
        currency: String,
    },
    CompleteTransaction {
        journal_id: String,
    },
    FailTransaction {
        reason_code: String,
        detail: String,
    },
}

/// What a command builder sees.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub saga_id: Uuid,
    pub transaction_id: Uuid,
    pub data: &'a SagaData,
    pub failure: Option<&'a Failure>,
}

/// Builds a step's command from the saga.
pub type BuildCommand = fn(&StepInput<'_>) -> Command;

/// One step of a saga type.
#[derive(Debug, Clone)]
pub struct StepDef {
    /// Unique in its saga type; part of the command id.
    pub name: &'static str,
    /// Routing key on the `commands` exchange.
    pub participant: &'static str,
    /// Overrides the engine's step timeout.
    pub timeout: Option<Duration>,
    /// Overrides the engine's attempts before giving up (pre-pivot) or
    /// flagging the saga for an operator (post-pivot, compensations).
    pub max_attempts: Option<u32>,
    /// The point of no return: once this step's command is sent the saga
    /// never compensates, except when this step itself is refused.
    pub pivot: bool,
    pub forward: BuildCommand,
    pub compensation: Option<BuildCommand>,
}

impl StepDef {
    /// A step with the engine's timeout and attempts, no compensation, not the pivot.
    pub fn new(name: &'static str, participant: &'static str, forward: BuildCommand) -> Self {
        Self {
            name,
            participant,
            timeout: None,
            max_attempts: None,
            pivot: false,
            forward,
            compensation: None,
        }
    }

    pub fn compensated_by(mut self, compensation: BuildCommand) -> Self {
        self.compensation = Some(compensation);
        self
    }

    pub fn pivot(mut self) -> Self {
        self.pivot = true;
        self
    }
}

/// A saga type: its steps in order and its finishes.
#[derive(Debug, Clone)]
pub struct SagaDefinition {
    pub saga_type: SagaType,
    pub steps: Vec<StepDef>,
    /// Sent once at start, no reply awaited.
    pub announce: Option<StepDef>,
    /// Runs after the last step succeeded; then the saga is COMPLETED.
    pub on_success: StepDef,
    /// Runs after a refusal (and the compensations); then FAILED or COMPENSATED.
    pub on_failure: StepDef,
}

impl SagaDefinition {
    /// A definition, checked: at least one step, at most one pivot, unique
    /// step names distinct from the finishes.
    pub fn new(
        saga_type: SagaType,
        steps: Vec<StepDef>,
        announce: Option<StepDef>,
        on_success: StepDef,
        on_failure: StepDef,
    ) -> Self {
        assert!(!steps.is_empty(), "a saga needs a step");
        assert!(
            steps.iter().filter(|step| step.pivot).count() <= 1,
            "a saga has at most one pivot"
        );
        let mut names: Vec<&str> = steps.iter().map(|step| step.name).collect();
        names.extend([on_success.name, on_failure.name]);
        names.extend(announce.iter().map(|step| step.name));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "step names must be unique");
        Self {
            saga_type,
            steps,
            announce,
            on_success,
            on_failure,
        }
    }

    /// The index of the pivot step, if any.
    pub fn pivot_index(&self) -> Option<usize> {
        self.steps.iter().position(|step| step.pivot)
    }

    /// Whether the forward step `index` comes before the pivot, so giving up
    /// on it (or aborting) may still compensate. Without a pivot every step can.
    pub fn before_pivot(&self, index: usize) -> bool {
        self.pivot_index().is_none_or(|pivot| index < pivot)
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.name == name)
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

fn announce() -> Option<StepDef> {
    Some(StepDef::new(
        ANNOUNCE_STEP,
        wire::service::TRANSACTION,
        |_| Command::MarkProcessing,
    ))
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

/// The transfer's steps: reserve on the source, then post (the pivot). A
/// fraud `screen` step goes between the two.
pub fn transfer_steps() -> Vec<StepDef> {
    vec![reserve(), post()]
}

/// The withdrawal's steps: as a transfer, crediting the settlement account.
pub fn withdrawal_steps() -> Vec<StepDef> {
    vec![reserve(), post()]
}

/// The deposit's single step: credit from the settlement account (the pivot).
pub fn deposit_steps() -> Vec<StepDef> {
    vec![
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

static TRANSFER: LazyLock<SagaDefinition> = LazyLock::new(|| {
    SagaDefinition::new(
        SagaType::Transfer,
        transfer_steps(),
        announce(),
        complete(),
        fail(),
    )
});
static WITHDRAWAL: LazyLock<SagaDefinition> = LazyLock::new(|| {
    SagaDefinition::new(
        SagaType::Withdrawal,
        withdrawal_steps(),
        announce(),
        complete(),
        fail(),
    )
});
static DEPOSIT: LazyLock<SagaDefinition> = LazyLock::new(|| {
    SagaDefinition::new(
        SagaType::Deposit,
        deposit_steps(),
        announce(),
        complete(),
        fail(),
    )
});

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_transfer_reserves_then_posts_and_only_the_reserve_is_compensable() {
        let definition = SagaType::Transfer.definition();
        let names: Vec<_> = definition.steps.iter().map(|step| step.name).collect();
        assert_eq!(names, ["reserve", "post"]);
        assert_eq!(definition.pivot_index(), Some(1));
        assert!(definition.steps[0].compensation.is_some());
        assert!(definition.before_pivot(0));
        assert!(!definition.before_pivot(1));
    }

    #[test]
    fn the_release_names_the_reserve_command_it_undoes() {
        let data = data();
        let saga_id = Uuid::now_v7();
        let input = StepInput {
            saga_id,
            transaction_id: Uuid::now_v7(),
            data: &data,
            failure: None,
        };
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
        let input = StepInput {
            saga_id: Uuid::now_v7(),
            transaction_id: Uuid::now_v7(),
            data: &data,
            failure: None,
        };
        let post = (SagaType::Withdrawal.definition().steps[1].forward)(&input);
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
    #[should_panic(expected = "unique")]
    fn a_definition_with_duplicate_step_names_is_refused() {
        SagaDefinition::new(
            SagaType::Transfer,
            vec![reserve(), reserve()],
            None,
            complete(),
            fail(),
        );
    }
}
