//! The orchestrator's pure rules: saga types as declared step lists, the
//! generic state machine that runs them, and retry timing. No I/O here: no
//! tonic, sqlx or lapin.

pub mod definition;
pub mod engine;
pub mod saga;
pub mod timing;

#[cfg(test)]
mod tests;

pub use definition::{
    ANNOUNCE_STEP, COMPLETE_STEP, Command, FAIL_STEP, Failure, SagaData, SagaDefinition, SagaType,
    StepDef, StepInput, reason,
};
pub use engine::Engine;
pub use saga::{
    Event, LogEntry, LogEvent, OutgoingCommand, Position, Refusal, ReplyOutcome, Saga, SagaState,
    Transition, position_of, step_at,
};
pub use timing::EngineConfig;
