//! `corebank saga …`: operators list, inspect, retry and abort sagas.

use corebank_proto::v1 as pb;
use corebank_proto::v1::saga_admin_service_client::SagaAdminServiceClient;

use crate::client::{ClientArgs, channel, default_actor};
use crate::output::print;

#[derive(Debug, clap::Args)]
pub struct SagaCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    action: SagaAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StateFilter {
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

#[derive(Debug, clap::Subcommand)]
enum SagaAction {
    /// List sagas, oldest first.
    List {
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// transfer | deposit | withdrawal
        #[arg(long, default_value = "")]
        saga_type: String,
        /// Only sagas older than this many seconds.
        #[arg(long, allow_negative_numbers = true)]
        older_than: Option<i64>,
        /// Only sagas flagged for an operator.
        #[arg(long)]
        attention: bool,
        /// Only sagas parked at a step that answered "wait" (a fraud review).
        #[arg(long)]
        parked: bool,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One saga with its full step history.
    Show { saga_id: String },
    /// Re-send the current step now.
    Retry(Decision),
    /// Compensate a saga that has not passed its pivot.
    Abort(Decision),
}

#[derive(Debug, clap::Args)]
struct Decision {
    saga_id: String,
    #[arg(long)]
    reason: String,
    #[arg(long, default_value_t = default_actor())]
    actor: String,
}

impl Decision {
    /// The action's request under `key` (`--idempotency-key`, a fresh one by
    /// default): run again with the same key, it replays the first answer.
    fn request(self, key: String) -> pb::SagaActionRequest {
        pb::SagaActionRequest {
            saga_id: self.saga_id,
            actor: self.actor,
            reason: self.reason,
            idempotency_key: key,
        }
    }
}

pub async fn saga(command: SagaCommand) -> anyhow::Result<()> {
    let mut client =
        SagaAdminServiceClient::new(channel(&command.client.orchestrator_endpoint).await?);
    let json = command.client.json;
    let key = command.client.key();
    match command.action {
        SagaAction::List {
            state,
            saga_type,
            older_than,
            attention,
            parked,
            page_size,
            page_token,
        } => {
            let state = match state {
                None => pb::SagaState::Unspecified,
                Some(StateFilter::Running) => pb::SagaState::Running,
                Some(StateFilter::Compensating) => pb::SagaState::Compensating,
                Some(StateFilter::Completed) => pb::SagaState::Completed,
                Some(StateFilter::Compensated) => pb::SagaState::Compensated,
                Some(StateFilter::Failed) => pb::SagaState::Failed,
            } as i32;
            let request = pb::ListSagasRequest {
                page_size,
                page_token,
                state,
                saga_type,
                min_age: older_than.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
                requires_attention_only: attention,
                parked_only: parked,
            };
            print(&client.list_sagas(request).await?.into_inner(), json)
        }
        SagaAction::Show { saga_id } => print(
            &client
                .get_saga(pb::GetSagaRequest { saga_id })
                .await?
                .into_inner(),
            json,
        ),
        SagaAction::Retry(decision) => print(
            &client.retry_saga(decision.request(key)).await?.into_inner(),
            json,
        ),
        SagaAction::Abort(decision) => print(
            &client.abort_saga(decision.request(key)).await?.into_inner(),
            json,
        ),
    }
}
