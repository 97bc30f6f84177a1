//! The gateway against a test-only service it was never written for
//! (`corebank.test.v1.EchoService`, compiled from `tests/proto` at test
//! time): routes, transcoding, errors, headers, streams, auth and limits,
//! without PostgreSQL or RabbitMQ. This file holds the gateway under test;
//! `transcoding.rs` how requests map to the service and back, `edge.rs` what
//! the edge does around them (errors, replays, deadlines, streams, unknown
//! routes, tokens and rate limits).

mod edge;
mod transcoding;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corebank_gateway::auth::EdgeAuth;
use corebank_gateway::testing::{ECHO_SERVICE, HttpClient, echo_pool, serve_echo};
use corebank_gateway::{Application, Settings};
use corebank_platform::auth::{AuthError, Principal};
use futures::future::BoxFuture;
use http::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;

/// Tokens are `sub:<subject>:<scope>,<scope>`; anything else is refused.
#[derive(Debug)]
struct FakeAuth;

impl EdgeAuth for FakeAuth {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(async move {
            let mut parts = token.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("sub"), Some(subject), Some(scopes)) => {
                    let scopes: BTreeSet<String> = scopes.split(',').map(str::to_owned).collect();
                    Ok(Principal::from_token(subject.to_owned(), scopes, false))
                }
                _ => Err(AuthError::Invalid("signature")),
            }
        })
    }

    fn backend_authorization(&self) -> Result<Option<AsciiMetadataValue>, tonic::Status> {
        Ok(Some("Bearer gateway-delegate".parse().expect("ascii")))
    }
}

struct Gateway {
    client: HttpClient,
    _stop: tokio_util::sync::DropGuard,
}

async fn gateway_with(adjust: impl FnOnce(&mut Settings)) -> Gateway {
    let stop = CancellationToken::new();
    let pool = echo_pool().expect("the test protos compile");
    let echo = serve_echo(pool.clone(), stop.clone())
        .await
        .expect("echo server");
    let mut settings = Settings {
        pool,
        endpoints: HashMap::from([(ECHO_SERVICE.to_owned(), format!("http://{echo}"))]),
        backend_tls: None,
        auth: None,
        request_timeout: Duration::from_secs(10),
        rate_limit_per_second: 1000,
        rate_limit_burst: 1000,
        max_body_bytes: 64 * 1024,
    };
    adjust(&mut settings);
    let app = Application::build(settings, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("gateway builds");
    let client = HttpClient::new(app.local_addr());
    tokio::spawn(app.run_until_stopped(stop.clone()));
    Gateway {
        client,
        _stop: stop.drop_guard(),
    }
}

async fn gateway() -> Gateway {
    gateway_with(|_| {}).await
}

fn violation_field(body: &serde_json::Value) -> Option<String> {
    body["details"].as_array()?.iter().find_map(|detail| {
        detail["fieldViolations"][0]["field"]
            .as_str()
            .map(str::to_owned)
    })
}
