//! The orchestrator's pure rules: saga types as declared step lists, the
//! generic state machine that runs them (retries, compensation, parking at a
//! step that answered "wait"), and retry timing. No I/O here: no
//! tonic, sqlx or lapin.

pub mod definition;
pub mod engine;
mod groups;
mod parking;
mod retry;
pub mod saga;
pub mod sagas;
pub mod timing;

#[cfg(test)]
mod tests;

pub use definition::{
    BuildCommand, COMPLETE_STEP, Command, FAIL_STEP, Failure, MARK_REVIEW_NOTICE, Notice,
    SCREEN_STEP, SagaData, SagaDefinition, SagaType, StepDef, StepInput, reason,
};
pub use engine::Engine;
pub use saga::{
    Event, LogEntry, LogEvent, OutgoingCommand, Position, Refusal, ReplyOutcome, Saga, SagaState,
    Transition, awaited, position_of, step_at,
};
pub use timing::EngineConfig;
