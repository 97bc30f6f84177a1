//! `corebank dlq list | replay`: parked messages, read without losing them,
//! and moved back to their work queue once the cause is fixed.

use corebank_platform::config::AmqpArgs;
use corebank_platform::messaging::dlq::{self, ReplaySelection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::exit::{Exit, fail};
use crate::output::{outln, stdout_closed};

#[derive(Debug, clap::Args)]
pub struct DlqCommand {
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(Debug, clap::Subcommand)]
enum DlqAction {
    /// Parked messages of one consumer queue (e.g. account.commands).
    List {
        queue: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Move parked messages back to their work queue: all, or the given ids.
    Replay {
        queue: String,
        /// Message ids to replay; none means all.
        #[arg(long = "message-id")]
        message_ids: Vec<Uuid>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print `{"queue": …, "replayed": n}` instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    let broker = command.amqp.broker("cli");
    let token = CancellationToken::new();
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        broker.connection(&token),
    );
    let connection = connect
        .await
        .ok()
        .flatten()
        .ok_or_else(|| fail(Exit::Unavailable, "cannot reach RabbitMQ (AMQP_URL)"))?;
    let namespace = broker.namespace().clone();
    let result = match command.action {
        DlqAction::List { queue, limit, json } => {
            let parked = dlq::list_parked(&connection, &namespace, &queue, limit).await?;
            // With --json, JSON Lines: no parked message is no line at all.
            if parked.is_empty() && !json {
                outln!("no parked messages in {}", namespace.dlq(&queue))?;
            }
            for message in parked {
                let line = serde_json::json!({
                    "message_id": message.message_id,
                    "message_type": message.message_type,
                    "correlation_id": message.correlation_id,
                    "reason": message.reason,
                    "error": message.error,
                    "parked_at": message.parked_at,
                    "attempt": message.attempt,
                    "payload_bytes": message.payload.len(),
                });
                if json {
                    outln!("{line}")?;
                } else {
                    outln!(
                        "{}  {}  reason={}  parked_at={}\n    {}",
                        message.message_id.as_deref().unwrap_or("-"),
                        message.message_type.as_deref().unwrap_or("-"),
                        message.reason.as_deref().unwrap_or("-"),
                        message.parked_at.as_deref().unwrap_or("-"),
                        message.error.as_deref().unwrap_or(""),
                    )?;
                }
                if stdout_closed() {
                    break;
                }
            }
            Ok(())
        }
        DlqAction::Replay {
            queue,
            message_ids,
            limit,
            json,
        } => {
            let selection = if message_ids.is_empty() {
                ReplaySelection::All
            } else {
                ReplaySelection::MessageIds(message_ids)
            };
            let moved =
                dlq::replay_parked(&connection, &namespace, &queue, &selection, limit).await?;
            let work_queue = namespace.queue(&queue);
            if json {
                let answer = serde_json::json!({"queue": work_queue, "replayed": moved});
                outln!("{answer}")?;
            } else {
                outln!("replayed {moved} message(s) to {work_queue}")?;
            }
            Ok(())
        }
    };
    token.cancel();
    broker.close().await;
    result
}
