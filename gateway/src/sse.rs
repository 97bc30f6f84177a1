//! Server-streaming RPCs over HTTP: Server-Sent Events when the client asks
//! for `text/event-stream`, NDJSON otherwise. Generic for any stream.
//!
//! Each SSE event carries an `id` derived from the message's state, so a
//! client reconnecting with `Last-Event-ID` gets only what it has not seen:
//! the message's `update_time` in nanoseconds when it has one (it grows with
//! every change of the resource), else its position in the stream. Events
//! whose id is not past `Last-Event-ID` are skipped.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, header};
use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use tonic::Streaming;

use crate::errors::GatewayError;
use crate::transcode::response_json;

/// The event id of the `position`-th (1-based) message of a stream.
pub fn event_id(message: &DynamicMessage, position: u64) -> i128 {
    let update_time = message
        .descriptor()
        .get_field_by_name("update_time")
        .filter(|field| message.has_field(field))
        .map(|field| message.get_field(&field).into_owned());
    if let Some(Value::Message(time)) = update_time
        && time.descriptor().full_name() == "google.protobuf.Timestamp"
    {
        let seconds = time
            .get_field_by_name("seconds")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let nanos = time
            .get_field_by_name("nanos")
            .and_then(|v| v.as_i32())
            .unwrap_or(0);
        return i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    }
    i128::from(position)
}

/// Whether the client asked for Server-Sent Events.
pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// The response for a backend stream.
pub fn stream_response(
    headers: &HeaderMap,
    streaming: tonic::Response<Streaming<DynamicMessage>>,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i128>().ok());
    let items = numbered(streaming.into_inner(), last_event_id);
    if wants_sse(headers) {
        let events = items.map(|item| {
            Ok::<_, Infallible>(match item {
                Ok((id, json)) => Event::default()
                    .id(id.to_string())
                    .event("message")
                    .data(String::from_utf8_lossy(&json)),
                Err(error) => Event::default()
                    .event("error")
                    .data(error.body().to_string()),
            })
        });
        return Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    let lines = items.map(|item| {
        let mut line = match item {
            Ok((_, json)) => json,
            Err(error) => serde_json::json!({"error": error.body()})
                .to_string()
                .into_bytes(),
        };
        line.push(b'\n');
        Ok::<_, Infallible>(line)
    });
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// The stream's messages as JSON with their ids, skipping those at or
/// before `after`; an error ends the stream.
fn numbered(
    stream: Streaming<DynamicMessage>,
    after: Option<i128>,
) -> impl Stream<Item = Result<(i128, Vec<u8>), GatewayError>> + Send {
    futures::stream::unfold(
        (stream, 0u64, false),
        move |(mut stream, seen, done)| async move {
            if done {
                return None;
            }
            let mut position = seen;
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        position += 1;
                        let id = event_id(&message, position);
                        if after.is_some_and(|after| id <= after) {
                            continue;
                        }
                        let item = response_json(&message).map(|json| (id, json));
                        return Some((item, (stream, position, false)));
                    }
                    Ok(None) => return None,
                    Err(status) => {
                        return Some((
                            Err(GatewayError::from_status(&status)),
                            (stream, position, true),
                        ));
                    }
                }
            }
        },
    )
}
