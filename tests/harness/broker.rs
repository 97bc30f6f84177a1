//! The test broker: namespaces, their topology, and forging or cutting
//! connections for fault tests.

use super::*;

/// The broker every test uses, each under its own namespace.
pub fn amqp_url() -> String {
    corebank_platform::config::amqp_url_from_env()
}

/// A fresh namespace: every exchange and queue of one test lives under it.
pub fn fresh_namespace() -> Namespace {
    Namespace::new(format!("cbt{}", &Uuid::new_v4().simple().to_string()[..12]))
}

/// A lazily connecting broker handle in `namespace`.
pub fn broker(namespace: &Namespace, name: &str) -> Broker {
    Broker::new(BrokerConfig::new(
        SecretString::from(amqp_url()),
        namespace.clone(),
        format!("{}-{name}", namespace.as_str()),
    ))
}

/// Every queue a full system declares.
pub fn all_queue_specs() -> Vec<QueueSpec> {
    services::queues()
}

/// Declares the exchanges and every queue of a full system in `namespace`.
pub async fn declare_namespace(namespace: &Namespace) {
    let broker = broker(namespace, "setup");
    let token = CancellationToken::new();
    let channel = broker.channel(&token).await.expect("broker channel");
    declare_exchanges(&channel, namespace)
        .await
        .expect("declare exchanges");
    for spec in all_queue_specs() {
        declare_queue(&channel, namespace, &spec)
            .await
            .expect("declare queue");
    }
    token.cancel();
    broker.close().await;
}

/// Deletes a test namespace's queues and exchanges, within a few seconds at most.
pub async fn delete_namespace(namespace: Namespace) {
    let broker = broker(&namespace, "cleanup");
    let token = CancellationToken::new();
    let work = async {
        if let Some(channel) = broker.channel(&token).await {
            let _ = delete_topology(&channel, &namespace, &all_queue_specs()).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
    token.cancel();
    broker.close().await;
}

/// Publishes a raw message as a participant or the orchestrator would, for
/// tests that duplicate or forge messages.
pub async fn publish(namespace: &Namespace, message: &OutgoingMessage) {
    let broker = broker(namespace, "forger");
    let token = CancellationToken::new();
    let channel = broker.channel(&token).await.expect("broker channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            namespace.exchange(message.exchange).into(),
            message.routing_key.clone().into(),
            lapin::options::BasicPublishOptions::default(),
            &message.payload,
            message.properties("forger"),
        )
        .await
        .expect("publish");
    confirm.await.expect("publisher confirm");
    token.cancel();
    broker.close().await;
}

/// Closes, from the broker's side, every connection of `namespace`; returns
/// how many. Needs `rabbitmqctl` (run as root or the rabbitmq user).
pub async fn close_broker_connections(namespace: &Namespace) -> usize {
    let listing = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let needle = format!("{{\"connection_name\",\"{}-", namespace.as_str());
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(&needle)) {
        let pid = line.split_whitespace().next().expect("pid column");
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by a fault test"])
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl close_connection failed"
        );
        closed += 1;
    }
    closed
}
