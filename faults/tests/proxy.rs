//! The proxy against real sockets: an echo server upstream, a client in
//! front, one test per fault. Timings only ever assert a lower bound, or a
//! generous upper one, because these machines are shared and noisy.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use corebank_faults::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

type TestResult = Result<(), Box<dyn Error>>;

/// Long enough that only a hung proxy misses it.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a blackholed read is given before it counts as unanswered.
const SILENCE: Duration = Duration::from_millis(300);

/// An upstream that sends back every byte it receives, on `127.0.0.1:0`.
async fn echo_server() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut from, mut to) = stream.split();
                if tokio::io::copy(&mut from, &mut to).await.is_ok() {
                    let _ = to.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

async fn proxy_in_front_of_echo() -> io::Result<FaultProxy> {
    FaultProxy::start(echo_server().await?).await
}

async fn connect(proxy: &FaultProxy) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(proxy.addr()).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `payload` and reads as many bytes back, both at once so neither
/// side's buffers can fill up and stall the other.
async fn exchange(stream: &mut TcpStream, payload: &[u8]) -> io::Result<Vec<u8>> {
    let (mut from, mut to) = stream.split();
    let mut echoed = vec![0; payload.len()];
    tokio::try_join!(to.write_all(payload), from.read_exact(&mut echoed))?;
    Ok(echoed)
}

/// [`exchange`], failing with `TimedOut` after `limit`.
async fn exchange_within(
    stream: &mut TcpStream,
    payload: &[u8],
    limit: Duration,
) -> io::Result<Vec<u8>> {
    timeout(limit, exchange(stream, payload))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Whether the next read sees the connection end (EOF or an error) in time.
async fn ends_promptly(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        timeout(PATIENCE, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Polls `condition` until it holds or [`PATIENCE`] runs out.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        sleep(Duration::from_millis(10)).await;
    }
    condition()
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8).collect()
}

#[tokio::test]
async fn pass_echoes_bytes_exactly_including_a_mebibyte() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut stream = connect(&proxy).await?;

    assert_eq!(
        exchange_within(&mut stream, b"hello", PATIENCE).await?,
        b"hello"
    );
    let mebibyte = patterned(1024 * 1024);
    assert!(exchange_within(&mut stream, &mebibyte, PATIENCE).await? == mebibyte);

    let expected = (mebibyte.len() + 5) as u64;
    assert!(eventually(|| proxy.stats().bytes_to_upstream == expected).await);
    assert!(eventually(|| proxy.stats().bytes_to_client == expected).await);
    assert_eq!(proxy.stats().accepted, 1);
    Ok(())
}

#[tokio::test]
async fn latency_of_200_ms_makes_a_round_trip_take_at_least_400_ms() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut stream = connect(&proxy).await?;
    proxy.set(Fault::Latency {
        base: Duration::from_millis(200),
        jitter: Duration::ZERO,
    });

    let started = Instant::now();
    assert_eq!(
        exchange_within(&mut stream, b"ping", PATIENCE).await?,
        b"ping"
    );
    let round_trip = started.elapsed();
    assert!(round_trip >= Duration::from_millis(400), "{round_trip:?}");
    Ok(())
}

#[tokio::test]
async fn seeded_jitter_keeps_a_round_trip_above_twice_base_minus_jitter() -> TestResult {
    let proxy = FaultProxy::start_seeded(echo_server().await?, 42).await?;
    proxy.set(Fault::Latency {
        base: Duration::from_millis(150),
        jitter: Duration::from_millis(50),
    });
    let mut stream = connect(&proxy).await?;

    for round in 0..3u8 {
        let started = Instant::now();
        assert_eq!(
            exchange_within(&mut stream, &[round], PATIENCE).await?,
            [round]
        );
        let round_trip = started.elapsed();
        assert!(round_trip >= Duration::from_millis(200), "{round_trip:?}");
    }
    Ok(())
}

#[tokio::test]
async fn switching_to_pass_releases_chunks_held_by_a_long_delay() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut stream = connect(&proxy).await?;
    proxy.set(Fault::Latency {
        base: Duration::from_secs(60),
        jitter: Duration::ZERO,
    });

    let (mut from, mut to) = stream.split();
    to.write_all(b"held").await?;
    sleep(Duration::from_millis(100)).await;
    proxy.set(Fault::Pass);
    let mut echoed = [0u8; 4];
    timeout(PATIENCE, from.read_exact(&mut echoed)).await??;
    assert_eq!(&echoed, b"held");
    Ok(())
}

#[tokio::test]
async fn refuse_resets_new_connections_while_open_ones_keep_echoing() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut open = connect(&proxy).await?;
    assert_eq!(
        exchange_within(&mut open, b"before", PATIENCE).await?,
        b"before"
    );

    proxy.set(Fault::Refuse);
    if let Ok(mut refused) = connect(&proxy).await {
        let outcome = exchange_within(&mut refused, b"refused", PATIENCE).await;
        assert!(outcome.is_err(), "a refused connection echoed: {outcome:?}");
    }
    assert_eq!(
        exchange_within(&mut open, b"still", PATIENCE).await?,
        b"still"
    );
    assert!(eventually(|| proxy.stats().refused >= 1).await);

    proxy.set(Fault::Pass);
    let mut welcome = connect(&proxy).await?;
    assert_eq!(
        exchange_within(&mut welcome, b"again", PATIENCE).await?,
        b"again"
    );
    Ok(())
}

#[tokio::test]
async fn reset_all_ends_open_connections_and_new_ones_then_work() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut first = connect(&proxy).await?;
    let mut second = connect(&proxy).await?;
    assert_eq!(exchange_within(&mut first, b"one", PATIENCE).await?, b"one");
    assert_eq!(
        exchange_within(&mut second, b"two", PATIENCE).await?,
        b"two"
    );

    proxy.reset_all();
    assert!(ends_promptly(&mut first).await);
    assert!(ends_promptly(&mut second).await);
    assert!(eventually(|| proxy.stats().resets == 2).await);

    let mut fresh = connect(&proxy).await?;
    assert_eq!(
        exchange_within(&mut fresh, b"fresh", PATIENCE).await?,
        b"fresh"
    );
    Ok(())
}

#[tokio::test]
async fn reset_all_interrupts_a_connection_waiting_out_a_delay() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut stream = connect(&proxy).await?;
    proxy.set(Fault::Latency {
        base: Duration::from_secs(60),
        jitter: Duration::ZERO,
    });
    stream.write_all(b"delayed").await?;
    sleep(Duration::from_millis(100)).await;

    proxy.reset_all();
    assert!(ends_promptly(&mut stream).await);
    Ok(())
}

#[tokio::test]
async fn blackhole_swallows_traffic_on_open_and_new_connections_until_pass_returns() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut open = connect(&proxy).await?;
    assert_eq!(
        exchange_within(&mut open, b"before", PATIENCE).await?,
        b"before"
    );

    proxy.set(Fault::Blackhole);
    let silenced = exchange_within(&mut open, b"lost", SILENCE).await;
    assert_eq!(
        silenced.map_err(|error| error.kind()),
        Err(io::ErrorKind::TimedOut)
    );
    let mut newcomer = connect(&proxy).await?;
    let unanswered = exchange_within(&mut newcomer, b"nobody", SILENCE).await;
    assert_eq!(
        unanswered.map_err(|error| error.kind()),
        Err(io::ErrorKind::TimedOut)
    );
    assert!(eventually(|| proxy.stats().bytes_blackholed >= 10).await);

    proxy.set(Fault::Pass);
    assert_eq!(
        exchange_within(&mut open, b"after", PATIENCE).await?,
        b"after"
    );
    assert_eq!(
        exchange_within(&mut newcomer, b"hello", PATIENCE).await?,
        b"hello"
    );
    Ok(())
}

#[tokio::test]
async fn stall_holds_traffic_on_open_and_new_connections_then_delivers_every_byte_in_order()
-> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut open = connect(&proxy).await?;
    assert_eq!(
        exchange_within(&mut open, b"before", PATIENCE).await?,
        b"before"
    );

    proxy.set(Fault::Stall);
    // More than the sockets' buffers hold, so the writer is pushed back.
    let payload = patterned(4 * 1024 * 1024);
    let (mut open_from, mut open_to) = open.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move { open_to.write_all(&sent).await });
    let mut first = [0u8; 1];
    assert!(
        timeout(SILENCE, open_from.read_exact(&mut first))
            .await
            .is_err()
    );
    assert!(!writer.is_finished(), "a stalled proxy took every byte");
    let mut newcomer = connect(&proxy).await?;
    newcomer.write_all(b"early").await?;
    let mut early = [0u8; 5];
    assert!(
        timeout(SILENCE, newcomer.read_exact(&mut early))
            .await
            .is_err()
    );

    proxy.set(Fault::Pass);
    let mut echoed = vec![0u8; payload.len()];
    timeout(PATIENCE, open_from.read_exact(&mut echoed)).await??;
    assert!(
        echoed == payload,
        "bytes were lost or reordered by the stall"
    );
    timeout(PATIENCE, writer).await???;
    timeout(PATIENCE, newcomer.read_exact(&mut early)).await??;
    assert_eq!(&early, b"early");
    assert_eq!(proxy.stats().bytes_blackholed, 0);
    Ok(())
}

#[tokio::test]
async fn a_bandwidth_of_64_kib_per_second_makes_128_kib_take_over_a_second_and_a_half() -> TestResult
{
    let proxy = proxy_in_front_of_echo().await?;
    let mut stream = connect(&proxy).await?;
    proxy.set(Fault::Bandwidth {
        bytes_per_second: 64 * 1024,
    });

    let payload = patterned(128 * 1024);
    let started = Instant::now();
    assert!(exchange_within(&mut stream, &payload, Duration::from_secs(60)).await? == payload);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_connections_and_the_listener() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let addr = proxy.addr();
    let mut open = connect(&proxy).await?;
    assert_eq!(exchange_within(&mut open, b"bye", PATIENCE).await?, b"bye");

    proxy.shutdown().await;
    assert!(ends_promptly(&mut open).await);
    if let Ok(mut late) = TcpStream::connect(addr).await {
        assert!(ends_promptly(&mut late).await);
    }
    Ok(())
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    let mut open = connect(&proxy).await?;
    proxy.set(Fault::Blackhole);

    drop(proxy);
    assert!(ends_promptly(&mut open).await);
    Ok(())
}

#[tokio::test]
async fn open_connections_are_counted_up_and_back_down() -> TestResult {
    let proxy = proxy_in_front_of_echo().await?;
    assert_eq!(proxy.connections(), 0);

    let mut first = connect(&proxy).await?;
    let mut second = connect(&proxy).await?;
    assert_eq!(exchange_within(&mut first, b"1", PATIENCE).await?, b"1");
    assert_eq!(exchange_within(&mut second, b"2", PATIENCE).await?, b"2");
    assert_eq!(proxy.connections(), 2);

    drop(first);
    assert!(eventually(|| proxy.connections() == 1).await);
    drop(second);
    assert!(eventually(|| proxy.connections() == 0).await);
    assert_eq!(proxy.stats().accepted, 2);
    Ok(())
}
