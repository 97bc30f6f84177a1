//! Exchanges and queues, all named under one namespace so that tests (and
//! several environments) can share a broker without seeing each other.
//!
//! Every queue is a durable quorum queue, so the same declarations run on a
//! cluster. Per consumer queue `<ns>.<name>` there are:
//! - the work queue, bound to the exchanges the consumer listens to; it
//!   dead-letters to the parking queue at-least-once after `delivery_limit`
//!   deliveries, a safety net for messages that crash the consumer before it can
//!   classify them;
//! - one delay queue per retry delay, `<ns>.<name>.delay.<ms>`, whose message TTL
//!   dead-letters expired messages back to the work queue;
//! - the parking queue `<ns>.<name>.dlq`, which nothing consumes.
//!
//! Delay and parking queues are addressed through the default exchange (routing
//! key = queue name), which needs no bindings. Declaring is idempotent; changing a
//! retry delay creates a new delay queue instead of clashing with the old one.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// The prefix of every exchange and queue name, e.g. `corebank`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// A namespace; names become `<prefix>.<name>`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self(prefix.into())
    }

    /// The bare prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<ns>.commands`, `<ns>.replies` or `<ns>.events`.
    pub fn exchange(&self, exchange: Exchange) -> String {
        format!("{}.{}", self.0, exchange.as_str())
    }

    /// The work queue of consumer `name`.
    pub fn queue(&self, name: &str) -> String {
        format!("{}.{name}", self.0)
    }

    /// The parking (dead-letter) queue of consumer `name`.
    pub fn dlq(&self, name: &str) -> String {
        format!("{}.{name}.dlq", self.0)
    }

    /// The delay queue of consumer `name` holding retries for `delay`.
    pub fn delay_queue(&self, name: &str, delay: Duration) -> String {
        format!("{}.{name}.delay.{}", self.0, delay.as_millis())
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three logical exchanges of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// Direct; routing key = the service that must execute the command.
    Commands,
    /// Direct; routing key = the orchestrator waiting for the reply.
    Replies,
    /// Topic; routing key = `<service>.<entity>.<event>`.
    Events,
}

impl Exchange {
    /// All exchanges, in declaration order.
    pub const ALL: [Exchange; 3] = [Exchange::Commands, Exchange::Replies, Exchange::Events];

    /// The un-namespaced name, as stored in the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Commands => "commands",
            Exchange::Replies => "replies",
            Exchange::Events => "events",
        }
    }

    /// The inverse of [`Exchange::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Exchange::ALL
            .into_iter()
            .find(|exchange| exchange.as_str() == name)
    }

    fn kind(self) -> ExchangeKind {
        match self {
            Exchange::Commands | Exchange::Replies => ExchangeKind::Direct,
            Exchange::Events => ExchangeKind::Topic,
        }
    }
}

/// A binding of a work queue to one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The exchange.
    pub exchange: Exchange,
    /// The routing key, or a topic pattern on [`Exchange::Events`].
    pub routing_key: String,
}

/// How a transiently failing message is retried before it is parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay before retry 1, 2, ...; the last one repeats. Must not be empty.
    pub delays: Vec<Duration>,
    /// Deliveries (first one included) before a transient failure is parked.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delays: [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The delay before the next delivery after attempt `attempt` (1-based)
    /// failed, or `None` when the message must be parked.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts || self.delays.is_empty() {
            return None;
        }
        let index = (attempt.max(1) as usize - 1).min(self.delays.len() - 1);
        Some(self.delays[index])
    }

    fn distinct_delays(&self) -> Vec<Duration> {
        let mut delays = self.delays.clone();
        delays.sort();
        delays.dedup();
        delays
    }
}

/// One consumer's queue: its bindings, retries and poison-message limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// The un-namespaced queue name, e.g. `account`; also the inbox's consumer key.
    pub name: String,
    /// What the work queue receives.
    pub bindings: Vec<Binding>,
    /// Transient-failure retries.
    pub retry: RetryPolicy,
    /// Broker-side deliveries (including redeliveries after a crash or a lost
    /// connection) before the broker itself parks a message.
    pub delivery_limit: u32,
}

impl QueueSpec {
    /// A queue with no bindings yet and the default retry policy.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bindings: Vec::new(),
            retry: RetryPolicy::default(),
            delivery_limit: 50,
        }
    }

    /// Adds a binding.
    pub fn bind(mut self, exchange: Exchange, routing_key: impl Into<String>) -> Self {
        self.bindings.push(Binding {
            exchange,
            routing_key: routing_key.into(),
        });
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Every queue of the spec in `ns`, in the order messages flow back
    /// through them: the delay queues, the work queue, the parking queue.
    pub fn queue_names(&self, ns: &Namespace) -> Vec<String> {
        let delays = self.retry.distinct_delays().into_iter();
        delays
            .map(|delay| ns.delay_queue(&self.name, delay))
            .chain([ns.queue(&self.name), ns.dlq(&self.name)])
            .collect()
    }
}

/// Declares the three exchanges of `ns` (durable). Idempotent.
pub async fn declare_exchanges(channel: &Channel, ns: &Namespace) -> lapin::Result<()> {
    for exchange in Exchange::ALL {
        channel
            .exchange_declare(
                ns.exchange(exchange).into(),
                exchange.kind(),
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares the work, delay and parking queues of `spec` and binds the work
/// queue. Idempotent as long as the arguments did not change.
pub async fn declare_queue(
    channel: &Channel,
    ns: &Namespace,
    spec: &QueueSpec,
) -> lapin::Result<()> {
    let work = ns.queue(&spec.name);
    let dlq = ns.dlq(&spec.name);
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };

    channel
        .queue_declare(dlq.clone().into(), durable, quorum_arguments())
        .await?;

    let mut work_arguments = dead_lettering_arguments(&dlq);
    work_arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(i32::try_from(spec.delivery_limit).unwrap_or(i32::MAX)),
    );
    channel
        .queue_declare(work.clone().into(), durable, work_arguments)
        .await?;

    for delay in spec.retry.distinct_delays() {
        let mut delay_arguments = dead_lettering_arguments(&work);
        let ttl_ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        delay_arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl_ms));
        channel
            .queue_declare(
                ns.delay_queue(&spec.name, delay).into(),
                durable,
                delay_arguments,
            )
            .await?;
    }

    for binding in &spec.bindings {
        channel
            .queue_bind(
                work.clone().into(),
                ns.exchange(binding.exchange).into(),
                binding.routing_key.clone().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Deletes the queues of `specs` and the exchanges of `ns`; for tests and
/// decommissioning. Messages in those queues are lost.
pub async fn delete_topology(
    channel: &Channel,
    ns: &Namespace,
    specs: &[QueueSpec],
) -> lapin::Result<()> {
    for spec in specs {
        for queue in spec.queue_names(ns) {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
    }
    for exchange in Exchange::ALL {
        channel
            .exchange_delete(
                ns.exchange(exchange).into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
    }
    Ok(())
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments
}

/// Dead-letters through the default exchange straight to `target`, at-least-once:
/// the source keeps a message until the target confirmed it, which RabbitMQ only
/// allows together with `reject-publish` overflow.
fn dead_lettering_arguments(target: &str) -> FieldTable {
    let mut arguments = quorum_arguments();
    arguments.insert("x-dead-letter-exchange".into(), long_string(""));
    arguments.insert("x-dead-letter-routing-key".into(), long_string(target));
    arguments.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    arguments.insert("x-overflow".into(), long_string("reject-publish"));
    arguments
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_then_repeat_and_stop_at_max_attempts() {
        let policy = RetryPolicy {
            delays: vec![Duration::from_millis(100), Duration::from_millis(500)],
            max_attempts: 4,
        };
        assert_eq!(policy.delay_after(1), Some(Duration::from_millis(100)));
        assert_eq!(policy.delay_after(2), Some(Duration::from_millis(500)));
        assert_eq!(policy.delay_after(3), Some(Duration::from_millis(500)));
        assert_eq!(policy.delay_after(4), None);
    }

    #[test]
    fn names_are_namespaced() {
        let ns = Namespace::new("t1");
        assert_eq!(ns.exchange(Exchange::Events), "t1.events");
        assert_eq!(ns.queue("account"), "t1.account");
        assert_eq!(ns.dlq("account"), "t1.account.dlq");
        assert_eq!(
            ns.delay_queue("account", Duration::from_secs(5)),
            "t1.account.delay.5000"
        );
        assert_eq!(Exchange::parse("replies"), Some(Exchange::Replies));
    }
}
