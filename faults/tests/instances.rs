//! Private servers against the real programs: each test starts its own
//! PostgreSQL or RabbitMQ, stops or kills it, and checks that nothing is left
//! behind. Timeouts are generous, because these machines are shared and a
//! RabbitMQ node boots slowly when several boot at once.

use std::error::Error;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use corebank_faults::{PrivatePostgres, PrivateRabbit, StopMode};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::{sleep, timeout};

type TestResult = Result<(), Box<dyn Error>>;

/// Long enough that only a hung server misses it.
const PATIENCE: Duration = Duration::from_secs(60);

/// `psql` against the private server, answering unaligned rows.
async fn psql(postgres: &PrivatePostgres, sql: &str) -> Result<String, Box<dyn Error>> {
    let output = timeout(
        PATIENCE,
        Command::new(postgres.bin_dir().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(postgres.url())
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output(),
    )
    .await??;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

async fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_err()
}

/// Whether any process's command line mentions `pattern`, as `pgrep -f` sees it.
async fn processes_matching(pattern: &str) -> Result<String, Box<dyn Error>> {
    let output = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .stdin(Stdio::null())
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Waits until nothing matches `pattern`, failing with what still does.
async fn no_processes_matching(pattern: &str) -> TestResult {
    let mut left = processes_matching(pattern).await?;
    for _ in 0..50 {
        if left.is_empty() {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
        left = processes_matching(pattern).await?;
    }
    Err(format!("processes outlived the node: {left}").into())
}

async fn amqp_channel(rabbit: &PrivateRabbit) -> Result<(Connection, Channel), Box<dyn Error>> {
    let connection = timeout(
        PATIENCE,
        Connection::connect(&rabbit.url(), ConnectionProperties::default()),
    )
    .await??;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Publishes a persistent message and waits for the broker's confirm.
async fn publish_confirmed(channel: &Channel, queue: &str, payload: &[u8]) -> TestResult {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    if !confirm.is_ack() {
        return Err("the broker did not confirm the message".into());
    }
    Ok(())
}

async fn get_one(channel: &Channel, queue: &str) -> Result<Vec<u8>, Box<dyn Error>> {
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
        .ok_or("the queue is empty")?;
    Ok(message.delivery.data)
}

#[tokio::test]
async fn a_private_postgres_accepts_connections_and_queries() -> TestResult {
    let postgres = PrivatePostgres::start().await?;

    assert!(postgres.port() < 32768, "port {}", postgres.port());
    assert_ne!(postgres.port(), 5432);
    assert!(postgres.is_running().await);
    assert_eq!(psql(&postgres, "select 41 + 1").await?, "42");
    assert_eq!(psql(&postgres, "show max_connections").await?, "300");
    Ok(())
}

#[tokio::test]
async fn private_postgres_data_survives_an_immediate_stop_and_a_fast_one() -> TestResult {
    let mut postgres = PrivatePostgres::start().await?;
    psql(
        &postgres,
        "create table kept (n int); insert into kept values (7)",
    )
    .await?;

    postgres.stop(StopMode::Immediate).await?;
    assert!(!postgres.is_running().await);
    assert!(refuses_connections(postgres.port()).await);
    postgres.start_again().await?;
    assert_eq!(psql(&postgres, "select n from kept").await?, "7");

    psql(&postgres, "insert into kept values (8)").await?;
    postgres.stop(StopMode::Fast).await?;
    assert!(!postgres.is_running().await);
    postgres.start_again().await?;
    assert_eq!(
        psql(
            &postgres,
            "select string_agg(n::text, ',' order by n) from kept"
        )
        .await?,
        "7,8"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_a_private_postgres_stops_it_and_removes_its_folder() -> TestResult {
    let postgres = PrivatePostgres::start().await?;
    let dir = postgres.dir().to_owned();
    let port = postgres.port();
    assert!(dir.join("data").is_dir());

    drop(postgres);

    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(refuses_connections(port).await);
    Ok(())
}

#[tokio::test]
async fn a_private_rabbit_accepts_amqp_and_confirms_a_publish() -> TestResult {
    let mut rabbit = PrivateRabbit::start().await?;
    assert!(rabbit.port() < 32768, "port {}", rabbit.port());
    assert_ne!(rabbit.port(), 5672);
    assert!(rabbit.is_running());
    assert!(!processes_matching(rabbit.node()).await?.is_empty());

    let (connection, channel) = amqp_channel(&rabbit).await?;
    channel
        .queue_declare(
            "greetings".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    publish_confirmed(&channel, "greetings", b"hello").await?;
    assert_eq!(get_one(&channel, "greetings").await?, b"hello");
    connection.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn a_durable_queue_and_its_messages_survive_a_killed_private_rabbit() -> TestResult {
    let mut rabbit = PrivateRabbit::start().await?;
    let (connection, channel) = amqp_channel(&rabbit).await?;
    channel
        .queue_declare(
            "kept".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    publish_confirmed(&channel, "kept", b"survivor").await?;
    connection.close(200, "done".into()).await?;
    // The declare is answered before the queue's record is on disk: killed
    // within milliseconds of it, the node boots without the queue.
    rabbit.sync_definitions().await?;

    rabbit.kill().await?;
    assert!(!rabbit.is_running());
    assert!(refuses_connections(rabbit.port()).await);
    no_processes_matching(rabbit.node()).await?;
    rabbit.start_again().await?;

    let (connection, channel) = amqp_channel(&rabbit).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("kept".into(), passive, FieldTable::default())
        .await
        .map_err(|error| {
            format!(
                "the queue did not survive: {error}\nthe node's log ends with:\n{}",
                rabbit.log_tail(60)
            )
        })?;
    assert_eq!(queue.message_count(), 1);
    assert_eq!(get_one(&channel, "kept").await?, b"survivor");
    connection.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn a_gracefully_stopped_private_rabbit_starts_again() -> TestResult {
    let mut rabbit = PrivateRabbit::start().await?;

    rabbit.stop_gracefully().await?;
    assert!(!rabbit.is_running());
    assert!(refuses_connections(rabbit.port()).await);
    no_processes_matching(rabbit.node()).await?;

    rabbit.start_again().await?;
    assert!(rabbit.is_running());
    let (connection, _channel) = amqp_channel(&rabbit).await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn dropping_a_private_rabbit_leaves_no_process_and_no_folder() -> TestResult {
    let rabbit = PrivateRabbit::start().await?;
    let node = rabbit.node().to_owned();
    let dir = rabbit.dir().to_owned();
    let port = rabbit.port();

    drop(rabbit);

    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(refuses_connections(port).await);
    no_processes_matching(&node).await?;
    Ok(())
}

#[tokio::test]
async fn a_panicking_test_still_removes_its_private_servers() -> TestResult {
    let (found, mut told) = tokio::sync::mpsc::unbounded_channel::<(PathBuf, String)>();
    let failing = tokio::spawn(async move {
        let postgres = PrivatePostgres::start().await.expect("postgres starts");
        let rabbit = PrivateRabbit::start().await.expect("rabbitmq starts");
        found
            .send((postgres.dir().to_owned(), String::new()))
            .expect("the test listens");
        found
            .send((rabbit.dir().to_owned(), rabbit.node().to_owned()))
            .expect("the test listens");
        panic!("a test body failing while its servers run");
    });

    let outcome = failing.await;
    assert!(outcome.is_err_and(|error| error.is_panic()));
    let (postgres_dir, _) = told.recv().await.ok_or("postgres never started")?;
    let (rabbit_dir, node) = told.recv().await.ok_or("rabbitmq never started")?;
    assert!(
        !postgres_dir.exists(),
        "{} is still there",
        postgres_dir.display()
    );
    assert!(
        !rabbit_dir.exists(),
        "{} is still there",
        rabbit_dir.display()
    );
    no_processes_matching(&node).await?;
    Ok(())
}
