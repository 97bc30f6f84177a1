//! One raw HTTP/1.0 exchange over a TCP stream: enough for the REST gateway
//! and the metrics endpoint, without an HTTP client among the tests'
//! dependencies.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `method path` to `addr` with `headers` (and a `Content-Length` when
/// `body` is not empty), reads until the server closes the connection, and
/// answers the status code (0 when the status line does not parse) and the
/// body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: corebank\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("connect to {addr} over HTTP: {error}"));
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .expect("read the response");
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    (status, payload.to_owned())
}
