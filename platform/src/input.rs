//! Input hardening for every gRPC server, in one place: a tower layer that
//! reads the single request message of a unary (or server-streaming) corebank
//! RPC, decodes it against the method's input type from the descriptor set,
//! and refuses a NUL character in any string field (nested messages, repeated
//! fields and maps included) with INVALID_ARGUMENT naming the field, before the
//! service sees the request. PostgreSQL cannot store U+0000 in text, so such a
//! request would otherwise fail deep in a handler as an internal error.
//!
//! Requests it does not know (health, reflection, client streams) and frames it
//! cannot read (compressed, malformed) pass untouched: the service answers them
//! as it always has. A checked request reaches the service with the same bytes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value};

use crate::error::{ApiError, ErrorCode, Violations};

/// The largest request body read: tonic's default decoding limit plus the
/// five-byte frame header.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024 + 5;

/// The reason of a request body larger than [`MAX_REQUEST_BYTES`].
pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Input type of every single-request method, by gRPC path
/// (`/corebank.v1.AccountService/GetAccount`).
static METHODS: LazyLock<Arc<HashMap<String, MessageDescriptor>>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    Arc::new(methods_of(&pool))
});

/// Maps each gRPC path of `pool` whose client sends one message to its input type.
pub fn methods_of(pool: &DescriptorPool) -> HashMap<String, MessageDescriptor> {
    let mut methods = HashMap::new();
    for service in pool.services() {
        for method in service.methods() {
            if !method.is_client_streaming() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                methods.insert(path, method.input());
            }
        }
    }
    methods
}

/// The proto field path of every string (or string map key) holding a NUL
/// character, e.g. `description`, `amount.currency`, `account_ids[2]`.
pub fn nul_fields(message: &DynamicMessage) -> Vec<String> {
    let mut found = Vec::new();
    walk_message(message, "", &mut found);
    found
}

fn walk_message(message: &DynamicMessage, prefix: &str, found: &mut Vec<String>) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        walk_value(value, &path, found);
    }
}

fn walk_value(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::String(text) if text.contains('\0') => found.push(path.to_owned()),
        Value::Message(message) => walk_message(message, path, found),
        Value::List(items) => {
            for (index, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{index}]"), found);
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries {
                match key {
                    // The key itself is bad: name the map, never echo the key.
                    MapKey::String(text) if text.contains('\0') => found.push(path.to_owned()),
                    MapKey::String(text) => walk_value(item, &format!("{path}[{text}]"), found),
                    other => walk_value(item, &format!("{path}[{other:?}]"), found),
                }
            }
        }
        _ => {}
    }
}

/// The violations of one buffered gRPC request body, or `None` when it has
/// none or is not a single uncompressed frame this layer can read.
pub fn check_frame(input: &MessageDescriptor, body: &[u8]) -> Option<Violations> {
    let (header, message) = body.split_at_checked(5)?;
    let compressed = header[0] != 0;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if compressed || length != message.len() {
        return None;
    }
    let decoded = DynamicMessage::decode(input.clone(), message).ok()?;
    let fields = nul_fields(&decoded);
    if fields.is_empty() {
        return None;
    }
    let mut violations = Violations::default();
    for field in fields {
        violations.add(field, "must not contain a NUL character");
    }
    Some(violations)
}

/// Adds [`InputCheck`] to a server's layer stack.
#[derive(Debug, Clone, Default)]
pub struct InputCheckLayer;

impl InputCheckLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> tower::Layer<S> for InputCheckLayer {
    type Service = InputCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InputCheck {
            inner,
            methods: METHODS.clone(),
        }
    }
}

/// Refuses corebank requests with a NUL in a string field; see the module docs.
#[derive(Debug, Clone)]
pub struct InputCheck<S> {
    inner: S,
    methods: Arc<HashMap<String, MessageDescriptor>>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for InputCheck<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let Some(input) = self.methods.get(request.uri().path()).cloned() else {
            return Box::pin(self.inner.call(request.map(tonic::body::Body::new)));
        };
        // The ready service answers this request; a fresh clone waits for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<LengthLimitError>() => {
                    return Ok(ApiError::new(
                        ErrorCode::ResourceExhausted,
                        MESSAGE_TOO_LARGE,
                        format!("request message larger than {MAX_REQUEST_BYTES} bytes"),
                    )
                    .into_status()
                    .into_http());
                }
                Err(error) => {
                    tracing::info!(%error, "request body could not be read");
                    return Ok(
                        tonic::Status::cancelled("request body could not be read").into_http()
                    );
                }
            };
            if let Some(violations) = check_frame(&input, &body) {
                let error = violations.into_error();
                tracing::info!(method = %parts.uri.path(), %error, "request refused: nul character");
                return Ok(error.into_status().into_http());
            }
            let request = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(body)));
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn frame(message: &impl Message) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        body.extend_from_slice(&encoded);
        body
    }

    fn fields(violations: Violations) -> Vec<String> {
        violations
            .into_error()
            .violations()
            .iter()
            .map(|violation| violation.field.clone())
            .collect()
    }

    #[test]
    fn every_corebank_method_is_known_by_its_grpc_path() {
        let methods = methods_of(&pool());
        let input = &methods["/corebank.v1.CustomerService/CreateCustomer"];
        assert_eq!(input.full_name(), "corebank.v1.CreateCustomerRequest");
        assert!(!methods.contains_key("/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn a_nul_in_a_top_level_string_is_named() {
        let methods = methods_of(&pool());
        let input = &methods["/corebank.v1.CustomerService/CreateCustomer"];
        let request = corebank_proto::v1::CreateCustomerRequest {
            legal_name: "Ada\0".to_owned(),
            idempotency_key: "k\0".to_owned(),
            ..Default::default()
        };
        let found = fields(check_frame(input, &frame(&request)).unwrap());
        assert_eq!(found.len(), 2);
        assert!(found.contains(&"legal_name".to_owned()));
        assert!(found.contains(&"idempotency_key".to_owned()));
    }

    #[test]
    fn a_nul_in_a_repeated_string_is_named_with_its_index() {
        let methods = methods_of(&pool());
        let input = &methods["/corebank.v1.ReportingService/CreateExport"];
        let request = corebank_proto::v1::CreateExportRequest {
            account_ids: vec!["fine".to_owned(), "bad\0".to_owned()],
            ..Default::default()
        };
        assert_eq!(
            fields(check_frame(input, &frame(&request)).unwrap()),
            ["account_ids[1]"]
        );
    }

    #[test]
    fn a_nul_in_a_nested_message_is_named_by_its_path() {
        let pool = pool();
        let money = pool.get_message_by_name("corebank.v1.Money").unwrap();
        let holder = pool
            .all_messages()
            .find(|message| {
                message
                    .fields()
                    .any(|field| field.kind().as_message() == Some(&money))
            })
            .expect("some message holds a Money");
        let field = holder
            .fields()
            .find(|field| field.kind().as_message() == Some(&money))
            .unwrap();
        let mut amount = DynamicMessage::new(money);
        amount.set_field_by_name("currency", Value::String("EU\0".to_owned()));
        let mut message = DynamicMessage::new(holder);
        message.set_field(&field, Value::Message(amount));
        assert_eq!(nul_fields(&message), [format!("{}.currency", field.name())]);
    }

    /// The layer in front of a real server over HTTP/2, checking health's
    /// request type in place of a corebank one.
    #[tokio::test]
    async fn over_http2_a_nul_is_refused_and_a_clean_request_is_served() {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;

        let health_pool = DescriptorPool::decode(tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
        let layer = tower::layer::layer_fn(move |inner| InputCheck {
            inner,
            methods: Arc::new(methods_of(&health_pool)),
        });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let status = client
            .check(HealthCheckRequest {
                service: "bad\0name".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let error = ApiError::from_status(&status);
        assert_eq!(error.reason(), crate::error::reason::VALIDATION_FAILED);
        assert_eq!(error.violations()[0].field, "service");
        let served = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(served.status, 1, "SERVING");
    }

    #[test]
    fn a_clean_or_unreadable_frame_passes() {
        let methods = methods_of(&pool());
        let input = &methods["/corebank.v1.CustomerService/CreateCustomer"];
        let clean = corebank_proto::v1::CreateCustomerRequest {
            legal_name: "Ada\tLovelace".to_owned(),
            ..Default::default()
        };
        assert!(check_frame(input, &frame(&clean)).is_none());
        let mut compressed = frame(&corebank_proto::v1::CreateCustomerRequest {
            legal_name: "\0".to_owned(),
            ..Default::default()
        });
        compressed[0] = 1;
        assert!(check_frame(input, &compressed).is_none());
        assert!(check_frame(input, &[0, 0]).is_none());
    }
}
