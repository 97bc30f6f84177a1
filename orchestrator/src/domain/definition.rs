//! Saga types as data: each is a declared list of steps (a command to a
//! participant, its optional compensation, whether it is the pivot, whether
//! it may answer "wait") plus one finish step per outcome. The engine in
//! [`super::engine`] runs any of them; [`super::sagas`] declares corebank's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Step name of the success finish.
pub const COMPLETE_STEP: &str = "complete";
/// Step name of the failure finish.
pub const FAIL_STEP: &str = "fail";
/// Step name of the fraud screening step.
pub const SCREEN_STEP: &str = "screen";
/// Name of the fire-and-forget notice sent when the screen step parks.
pub const MARK_REVIEW_NOTICE: &str = "mark_review";

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
    /// A parked step's final answer never came, even after the grace period;
    /// the default of [`StepDef::wait_expired_reason`](super::StepDef).
    pub const WAIT_EXPIRED: &str = "WAIT_EXPIRED";
    /// A fraud review was not decided by its deadline (plus grace).
    pub const REVIEW_EXPIRED: &str = "REVIEW_EXPIRED";
    /// The fraud service never answered: fail closed, no money moves unscreened.
    pub const SCREENING_UNAVAILABLE: &str = "SCREENING_UNAVAILABLE";
}

/// A command the orchestrator sends, without its envelope: the adapter adds
/// the command id, saga id and transaction id and encodes it as protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
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
    /// Asks the fraud service to screen the movement before money moves.
    ScreenTransaction {
        kind: SagaType,
        source_account_id: Option<Uuid>,
        destination_account_id: Option<Uuid>,
        amount: Decimal,
        currency: String,
        requested_at: DateTime<Utc>,
    },
    /// Tells the transaction service that `step` waits for a final answer
    /// until `deadline` (the transaction shows REVIEW). Fire-and-forget.
    MarkReview {
        step: &'static str,
        deadline: DateTime<Utc>,
    },
}

/// What a command builder sees.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub kind: SagaType,
    pub saga_id: Uuid,
    pub transaction_id: Uuid,
    pub data: &'a SagaData,
    pub failure: Option<&'a Failure>,
    /// When the movement was requested: the saga's creation.
    pub requested_at: DateTime<Utc>,
    /// The deadline of the step's wait, while the saga is parked.
    pub parked_until: Option<DateTime<Utc>>,
}

/// Builds a step's command from the saga.
pub type BuildCommand = fn(&StepInput<'_>) -> Command;

/// A fire-and-forget command sent on the side of a step (no reply awaited):
/// its own name keeps its command id apart from the step's, and its own
/// participant lets it go to another service than the step's.
#[derive(Debug, Clone)]
pub struct Notice {
    pub name: &'static str,
    pub participant: &'static str,
    pub build: BuildCommand,
}

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
    /// Whether the participant may answer WAITING: the saga then parks at
    /// this step until its final reply. Only steps before the pivot may.
    pub may_wait: bool,
    /// The failure reason when a parked step's final reply never comes
    /// (deadline plus the engine's grace).
    pub wait_expired_reason: &'static str,
    /// The failure reason when the step runs out of attempts before the
    /// pivot; `None` gives [`reason::TIMED_OUT`].
    pub exhausted_reason: Option<&'static str>,
    /// Sent once when the step parks, so others can show the wait.
    pub on_wait: Option<Notice>,
    /// Runs at the same time as the step before it: consecutive steps so
    /// declared form a parallel group, whose commands go out together and
    /// which is done when every one of them has succeeded.
    pub alongside_previous: bool,
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
            may_wait: false,
            wait_expired_reason: reason::WAIT_EXPIRED,
            exhausted_reason: None,
            on_wait: None,
            alongside_previous: false,
        }
    }

    /// Runs at the same time as the step before it (see
    /// [`SagaDefinition::group`]).
    pub fn alongside_previous(mut self) -> Self {
        self.alongside_previous = true;
        self
    }

    /// Lets the participant answer WAITING; `expired_reason` fails the saga
    /// when the final reply never comes, `on_wait` announces the wait.
    pub fn may_wait(mut self, expired_reason: &'static str, on_wait: Option<Notice>) -> Self {
        self.may_wait = true;
        self.wait_expired_reason = expired_reason;
        self.on_wait = on_wait;
        self
    }

    /// The failure reason when the step runs out of attempts.
    pub fn exhausted_with(mut self, reason_code: &'static str) -> Self {
        self.exhausted_reason = Some(reason_code);
        self
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
    /// Runs after the last step succeeded; then the saga is COMPLETED.
    pub on_success: StepDef,
    /// Runs after a refusal (and the compensations); then FAILED or COMPENSATED.
    pub on_failure: StepDef,
}

impl SagaDefinition {
    /// A definition, checked: at least one step, at most one pivot, only
    /// steps before the pivot may wait (a wait can end in compensation),
    /// unique step and notice names distinct from the finishes. A parallel
    /// group lies wholly before the pivot (its steps may all be undone), has
    /// at most one step that may wait (the one a parked saga waits for) and
    /// at most one with a compensation (so a refusal in the group undoes
    /// exactly the others' effects, in the one order there is).
    pub fn new(
        saga_type: SagaType,
        steps: Vec<StepDef>,
        on_success: StepDef,
        on_failure: StepDef,
    ) -> Self {
        assert!(!steps.is_empty(), "a saga needs a step");
        assert!(
            steps.iter().filter(|step| step.pivot).count() <= 1,
            "a saga has at most one pivot"
        );
        let pivot = steps.iter().position(|step| step.pivot);
        assert!(
            steps
                .iter()
                .enumerate()
                .all(|(index, step)| !step.may_wait || pivot.is_none_or(|pivot| index < pivot)),
            "only steps before the pivot may wait"
        );
        assert!(
            !steps[0].alongside_previous,
            "the first step has no step before it to run alongside"
        );
        let mut start = 0;
        while start < steps.len() {
            let end = group_end(&steps, start);
            let group = &steps[start..end];
            if group.len() > 1 {
                assert!(
                    pivot.is_none_or(|pivot| end <= pivot),
                    "a parallel group runs before the pivot"
                );
                assert!(
                    group.iter().filter(|step| step.may_wait).count() <= 1,
                    "a parallel group has at most one step that may wait"
                );
                assert!(
                    group
                        .iter()
                        .filter(|step| step.compensation.is_some())
                        .count()
                        <= 1,
                    "a parallel group has at most one compensable step"
                );
            }
            start = end;
        }
        let mut names: Vec<&str> = steps.iter().map(|step| step.name).collect();
        names.extend([on_success.name, on_failure.name]);
        names.extend(
            steps
                .iter()
                .filter_map(|step| step.on_wait.as_ref())
                .map(|notice| notice.name),
        );
        assert!(
            names.iter().all(|name| !name.contains(',')),
            "step names have no commas (a parallel group's answered steps are stored comma-separated)"
        );
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "step names must be unique");
        Self {
            saga_type,
            steps,
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

    /// The steps that run together with step `index` (itself included): the
    /// group's range, which is `index..index + 1` for a step on its own.
    pub fn group(&self, index: usize) -> std::ops::Range<usize> {
        let start = (0..=index)
            .rev()
            .find(|&at| !self.steps[at].alongside_previous)
            .unwrap_or(0);
        start..group_end(&self.steps, index)
    }
}

/// The end (exclusive) of the group that step `index` belongs to.
fn group_end(steps: &[StepDef], index: usize) -> usize {
    (index + 1..steps.len())
        .find(|&at| !steps[at].alongside_previous)
        .unwrap_or(steps.len())
}
