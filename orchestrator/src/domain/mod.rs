//! The orchestrator's pure rules: saga types as declared step lists, the
//! generic state machine that runs them, and retry timing. No I/O here: no
//! tonic, sqlx or lapin.

pub mod definition;
pub mod engine;
pub mod timing;

#[cfg(test)]
mod tests;

pub use definition::{
    ANNOUNCE_STEP, COMPLETE_STEP, Command, FAIL_STEP, Failure, SagaData, SagaDefinition, SagaType,
    StepDef, StepInput, reason,
};
pub use engine::{
    Engine, Event, LogEntry, LogEvent, OutgoingCommand, Position, Refusal, ReplyOutcome, Saga,
    SagaState, Transition,
};
pub use timing::EngineConfig;
