//! `corebank.v1.SagaAdminService`: proto ⇄ domain, validation at the edge.
//! Operator actions go through the same engine as replies and timers, so each
//! is one transition recorded in the saga's log with its actor and reason.
//! Each is guarded by its idempotency key in the same transaction, so a
//! repeated action replays its first answer instead of logging a second one.

use std::sync::Arc;

use corebank_platform::auth::Principal;
use corebank_platform::clock::SharedClock;
use corebank_platform::idempotency::{fingerprint, required_key};
use corebank_platform::paging::Page;
use corebank_platform::time::to_timestamp;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use corebank_proto::v1::saga_admin_service_server::SagaAdminService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{EngineConfig, Event, Refusal, Saga, SagaState, SagaType};
use crate::domain::{awaited, step_at};
use crate::runtime;
use crate::store::{self, LogRecord, SagaFilter, SagaStore};

pub const SAGA_TERMINAL: &str = "SAGA_TERMINAL";
pub const SAGA_PAST_PIVOT: &str = "SAGA_PAST_PIVOT";
pub const SAGA_COMPENSATING: &str = "SAGA_COMPENSATING";

const MAX_ACTOR: usize = 200;
const MAX_REASON: usize = 1000;

/// The admin handlers.
#[derive(Debug, Clone)]
pub struct SagaAdminApi {
    store: SagaStore,
    config: Arc<EngineConfig>,
    clock: SharedClock,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Abort,
}

impl Action {
    /// The RPC's name, which keeps one key's retry and abort apart.
    fn operation(self) -> &'static str {
        match self {
            Self::Retry => "RetrySaga",
            Self::Abort => "AbortSaga",
        }
    }
}

impl SagaAdminApi {
    pub fn new(store: SagaStore, config: Arc<EngineConfig>, clock: SharedClock) -> Self {
        Self {
            store,
            config,
            clock,
        }
    }

    /// Applies an operator action. `request.actor` is the authenticated
    /// caller, so the fingerprint is the caller's: another operator reusing
    /// a key is refused, never answered with the first one's response.
    async fn act(
        &self,
        request: pb::SagaActionRequest,
        action: Action,
    ) -> Result<pb::Saga, ApiError> {
        let mut violations = Violations::default();
        let saga_id = violations.take("saga_id", parse_id(&request.saga_id));
        let actor = request.actor.trim();
        let reason = request.reason.trim();
        violations.check(!actor.is_empty(), "actor", "is required");
        violations.check(
            actor.chars().count() <= MAX_ACTOR,
            "actor",
            "must be at most 200 characters",
        );
        violations.check(!reason.is_empty(), "reason", "is required");
        violations.check(
            reason.chars().count() <= MAX_REASON,
            "reason",
            "must be at most 1000 characters",
        );
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let saga_id =
            saga_id.ok_or_else(|| ApiError::invalid_field("saga_id", "must be a UUID"))?;
        let (actor, reason) = (actor.to_owned(), reason.to_owned());
        let event = match action {
            Action::Retry => Event::AdminRetry {
                actor: actor.clone(),
                reason,
            },
            Action::Abort => Event::AdminAbort {
                actor: actor.clone(),
                reason,
            },
        };
        let fingerprint = fingerprint(
            action.operation(),
            &pb::SagaActionRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let now = self.clock.now();
        let config = self.config.clone();
        self.store
            .idempotent(Some(&key), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let saga = store::lock(conn, saga_id)
                        .await?
                        .ok_or_else(|| store::not_found(saga_id))?;
                    let transition = runtime::apply(conn, &config, &saga, event, now, None)
                        .await?
                        .map_err(|refusal| refused(&saga, refusal))?;
                    // Read in the transaction, so the stored (and replayed)
                    // answer holds the log row this action wrote.
                    let history = store::history(conn, saga_id).await?;
                    tracing::info!(%saga_id, %actor, action = ?action, state = transition.saga.state.as_str(), "operator acted on saga");
                    Ok(to_proto(&transition.saga, &history))
                })
            })
            .await
    }
}

fn refused(saga: &Saga, refusal: Refusal) -> ApiError {
    let state = saga.state.as_str();
    let error = match refusal {
        Refusal::Terminal => ApiError::failed_precondition(
            SAGA_TERMINAL,
            format!("the saga is {state}: nothing to do"),
        ),
        Refusal::PastPivot => ApiError::failed_precondition(
            SAGA_PAST_PIVOT,
            "the saga has passed its pivot: it can only go forward, retry it instead",
        ),
        Refusal::AlreadyCompensating => {
            ApiError::failed_precondition(SAGA_COMPENSATING, "the saga is already compensating")
        }
        other => ApiError::internal(anyhow::anyhow!(
            "unexpected refusal of an operator action: {other}"
        )),
    };
    error
        .with_metadata("saga_id", saga.saga_id.to_string())
        .with_metadata("state", state)
}

pub fn parse_id(text: &str) -> Result<Uuid, &'static str> {
    if text.is_empty() {
        return Err("is required");
    }
    Uuid::parse_str(text).map_err(|_| "must be a UUID")
}

pub fn state_to_proto(state: SagaState) -> pb::SagaState {
    match state {
        SagaState::Running => pb::SagaState::Running,
        SagaState::Compensating => pb::SagaState::Compensating,
        SagaState::Completed => pb::SagaState::Completed,
        SagaState::Compensated => pb::SagaState::Compensated,
        SagaState::Failed => pb::SagaState::Failed,
    }
}

fn state_from_proto(state: pb::SagaState) -> Option<SagaState> {
    match state {
        pb::SagaState::Unspecified => None,
        pb::SagaState::Running => Some(SagaState::Running),
        pb::SagaState::Compensating => Some(SagaState::Compensating),
        pb::SagaState::Completed => Some(SagaState::Completed),
        pb::SagaState::Compensated => Some(SagaState::Compensated),
        pb::SagaState::Failed => Some(SagaState::Failed),
    }
}

fn to_proto(saga: &Saga, history: &[LogRecord]) -> pb::Saga {
    let definition = saga.saga_type.definition();
    let (step, _) = step_at(definition, saga.position);
    let awaiting_steps = awaited(definition, saga)
        .into_iter()
        .map(|position| step_at(definition, position).0.name.to_owned())
        .collect();
    pb::Saga {
        saga_id: saga.saga_id.to_string(),
        saga_type: saga.saga_type.as_str().to_owned(),
        transaction_id: saga.transaction_id.to_string(),
        state: state_to_proto(saga.state) as i32,
        current_step: step.name.to_owned(),
        attempt: i32::try_from(saga.attempt).unwrap_or(i32::MAX),
        requires_attention: saga.requires_attention,
        next_attempt_time: saga.next_attempt_at.map(to_timestamp),
        failure_reason: saga
            .failure
            .as_ref()
            .map(|failure| failure.reason_code.clone())
            .unwrap_or_default(),
        create_time: Some(to_timestamp(saga.created_at)),
        update_time: Some(to_timestamp(saga.updated_at)),
        history: history.iter().map(log_to_proto).collect(),
        parked_until: saga.parked_until.map(to_timestamp),
        awaiting_steps,
    }
}

fn log_to_proto(record: &LogRecord) -> pb::SagaLogEntry {
    let state = SagaState::parse(&record.state)
        .map(state_to_proto)
        .unwrap_or(pb::SagaState::Unspecified);
    pb::SagaLogEntry {
        sequence: record.saga_log_id,
        step: record.step.clone(),
        direction: record.direction.clone(),
        event: record.event.clone(),
        state: state as i32,
        command_id: record.command_id.clone(),
        attempt: record.attempt,
        detail: record.detail.clone(),
        actor: record.actor.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(record.created_at)),
    }
}

#[tonic::async_trait]
impl SagaAdminService for SagaAdminApi {
    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let state = violations.take(
            "state",
            pb::SagaState::try_from(request.state)
                .map(state_from_proto)
                .map_err(|_| "is not a known saga state"),
        );
        let saga_type = match request.saga_type.as_str() {
            "" => None,
            text => violations.take(
                "saga_type",
                SagaType::parse(text).ok_or("must be transfer, deposit or withdrawal"),
            ),
        };
        let min_age = request.min_age.map(|age| {
            chrono::Duration::try_seconds(age.seconds)
                .and_then(|seconds| {
                    seconds.checked_add(&chrono::Duration::nanoseconds(i64::from(age.nanos)))
                })
                .filter(|age| *age >= chrono::Duration::zero())
                .ok_or("must be a non-negative duration")
        });
        let min_age = min_age.and_then(|age| violations.take("min_age", age));
        violations.into_result()?;
        let state = state.flatten();
        let filter_key = format!(
            "state={};type={};min_age_ms={};attention={};parked={}",
            state.map(SagaState::as_str).unwrap_or("any"),
            saga_type.map(SagaType::as_str).unwrap_or("any"),
            min_age.map(|age| age.num_milliseconds()).unwrap_or(0),
            request.requires_attention_only,
            request.parked_only
        );
        let page = Page::parse(request.page_size, &request.page_token, &filter_key)?;
        let filter = SagaFilter {
            state,
            saga_type,
            created_before: min_age.and_then(|age| self.clock.now().checked_sub_signed(age)),
            requires_attention_only: request.requires_attention_only,
            parked_only: request.parked_only,
        };
        let mut sagas = self.store.list(&filter, &page).await?;
        let next_page_token = page.finish(&mut sagas, |saga| saga.saga_id.to_string(), &filter_key);
        Ok(Response::new(pb::ListSagasResponse {
            sagas: sagas.iter().map(|saga| to_proto(saga, &[])).collect(),
            next_page_token,
        }))
    }

    async fn get_saga(
        &self,
        request: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let request = request.into_inner();
        let saga_id =
            parse_id(&request.saga_id).map_err(|why| ApiError::invalid_field("saga_id", why))?;
        let saga = self.store.get(saga_id).await?;
        let history = self.store.history(saga_id).await?;
        Ok(Response::new(to_proto(&saga, &history)))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::SagaActionRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        Ok(Response::new(
            self.act(with_actor(request)?, Action::Retry).await?,
        ))
    }

    async fn abort_saga(
        &self,
        request: Request<pb::SagaActionRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        Ok(Response::new(
            self.act(with_actor(request)?, Action::Abort).await?,
        ))
    }
}

/// The request with `actor` set to the authenticated caller: the free-text
/// field a client sends is never recorded.
fn with_actor(request: Request<pb::SagaActionRequest>) -> Result<pb::SagaActionRequest, Status> {
    let actor = Principal::actor_of(&request)?;
    let mut request = request.into_inner();
    request.actor = actor;
    Ok(request)
}
