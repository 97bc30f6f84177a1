//! A gRPC server for the test-only `corebank.test.v1.EchoService`, built on
//! the same dynamic codec as the gateway (no generated code), so a test can
//! show an RPC the gateway has never heard of being served end to end.
//!
//! It answers with what it received: `Shout` echoes the request (and honours
//! a few magic texts to produce errors, delays and replays), `Search` and
//! `Annotate` echo theirs with the `x-request-id` and forwarded credentials
//! in `text`, and `Count` streams `to` replies with rising `update_time`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::backend::DynamicCodec;

/// The proto service name.
pub const ECHO_SERVICE: &str = "corebank.test.v1.EchoService";

/// Serves the echo service on a free loopback port until `shutdown`.
pub async fn serve_echo(
    pool: DescriptorPool,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = Echo { pool };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { shutdown.cancelled().await },
            ),
    );
    Ok(addr)
}

#[derive(Debug, Clone)]
struct Echo {
    pool: DescriptorPool,
}

impl NamedService for Echo {
    const NAME: &'static str = ECHO_SERVICE;
}

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            let name = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let method = pool
                .get_service_by_name(ECHO_SERVICE)
                .and_then(|service| service.methods().find(|method| method.name() == name));
            let Some(method) = method else {
                return Ok(Status::unimplemented("no such method").into_http());
            };
            let codec = DynamicCodec::new(method.input());
            let mut grpc = Grpc::new(codec);
            let output = method.output();
            let response = if method.is_server_streaming() {
                grpc.server_streaming(Counter(output), request).await
            } else {
                grpc.unary(Replier(output), request).await
            };
            Ok(response)
        })
    }
}

struct Replier(MessageDescriptor);

impl UnaryService<DynamicMessage> for Replier {
    type Response = DynamicMessage;
    type Future = BoxFuture<'static, Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let output = self.0.clone();
        Box::pin(async move {
            let seen = |name: &str| {
                request
                    .metadata()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let echo = format!(
                "request-id={} authorization={} on-behalf-of={}",
                seen("x-request-id"),
                if seen("authorization") == "-" {
                    "no"
                } else {
                    "yes"
                },
                if seen("x-corebank-on-behalf-of") == "-" {
                    "no"
                } else {
                    "yes"
                },
            );
            let message = request.get_ref().clone();
            let kind = message.descriptor().name().to_owned();
            let mut reply = DynamicMessage::new(output);
            let mut replayed = false;
            if kind == "ShoutRequest" {
                let text = message
                    .get_field_by_name("text")
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default();
                match text.as_str() {
                    "fail-internal" => return Err(Status::internal("db at 10.1.2.3:5432 refused")),
                    "fail-invalid" => {
                        let mut details = ErrorDetails::new();
                        details.add_bad_request_violation("text", "must not be fail-invalid");
                        details.set_error_info("VALIDATION_FAILED", "corebank", []);
                        return Err(Status::with_error_details(
                            tonic::Code::InvalidArgument,
                            "text: must not be fail-invalid",
                            details,
                        ));
                    }
                    "fail-precondition" => {
                        let mut details = ErrorDetails::new();
                        details.set_error_info("INSUFFICIENT_FUNDS", "corebank", []);
                        return Err(Status::with_error_details(
                            tonic::Code::FailedPrecondition,
                            "insufficient funds",
                            details,
                        ));
                    }
                    "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                    "replay" => replayed = true,
                    _ => {}
                }
                reply.set_field_by_name("text", Value::String(text));
                reply.set_field_by_name("shout", Value::Message(message));
            } else {
                reply.set_field_by_name("text", Value::String(echo));
                let field = if kind == "SearchRequest" {
                    "search"
                } else {
                    "annotate"
                };
                reply.set_field_by_name(field, Value::Message(message));
            }
            reply.set_field_by_name("big", Value::I64(9_007_199_254_740_993));
            let mut response = Response::new(reply);
            if replayed {
                response
                    .metadata_mut()
                    .insert("idempotent-replayed", "true".parse().expect("ascii"));
            }
            Ok(response)
        })
    }
}

struct Counter(MessageDescriptor);

impl ServerStreamingService<DynamicMessage> for Counter {
    type Response = DynamicMessage;
    type ResponseStream = futures::stream::BoxStream<'static, Result<DynamicMessage, Status>>;
    type Future = BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let output = self.0.clone();
        Box::pin(async move {
            let to = request
                .get_ref()
                .get_field_by_name("to")
                .and_then(|value| value.as_i32())
                .unwrap_or(0);
            if to < 0 {
                return Err(Status::invalid_argument("to: must not be negative"));
            }
            let timestamp = output
                .get_field_by_name("update_time")
                .and_then(|field| field.kind().as_message().cloned())
                .expect("update_time is a Timestamp");
            let replies: Vec<Result<DynamicMessage, Status>> = (1..=to)
                .map(|n| {
                    let mut time = DynamicMessage::new(timestamp.clone());
                    time.set_field_by_name("seconds", Value::I64(1_700_000_000 + i64::from(n)));
                    let mut reply = DynamicMessage::new(output.clone());
                    reply.set_field_by_name("n", Value::I32(n));
                    reply.set_field_by_name("update_time", Value::Message(time));
                    Ok(reply)
                })
                .collect();
            let stream: Self::ResponseStream = Box::pin(futures::stream::iter(replies));
            Ok(Response::new(stream))
        })
    }
}
