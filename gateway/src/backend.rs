//! Generic gRPC calls: a codec that encodes and decodes
//! `prost_reflect::DynamicMessage` by the method's descriptors, and one lazy
//! channel per proto service, so any method of any routed service can be
//! called without generated stubs. Each call carries the request's trace
//! context (`traceparent`) when traces are on.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Buf;

use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Encodes requests and decodes responses of one method.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    pub fn new(output: MessageDescriptor) -> Self {
        Self { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.output.clone())
    }
}

#[derive(Debug)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|error| Status::internal(format!("encode request: {error}")))
    }
}

#[derive(Debug)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|error| Status::internal(format!("decode response: {error}")))
    }
}

/// A lazy channel per proto service (`corebank.v1.AccountService`).
#[derive(Debug, Clone, Default)]
pub struct Backends {
    channels: HashMap<String, Channel>,
}

impl Backends {
    /// Channels to `endpoints` (proto service name → `http://host:port`,
    /// or `https://` with `tls`); nothing connects until the first call.
    pub fn new(
        endpoints: &HashMap<String, String>,
        connect_timeout: Duration,
        tls: Option<&ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let mut channels = HashMap::new();
        for (service, endpoint) in endpoints {
            let mut target = Endpoint::from_shared(endpoint.clone())
                .map_err(|error| anyhow::anyhow!("{service} endpoint {endpoint:?}: {error}"))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true);
            if let Some(tls) = tls {
                // tonic applies TLS by the scheme: an http:// endpoint would
                // carry partners' tokens in plain text.
                anyhow::ensure!(
                    target.uri().scheme_str() == Some("https"),
                    "TLS is configured (--tls-ca) but the {service} endpoint {endpoint:?} is not https://"
                );
                target = target.tls_config(tls.clone())?;
            }
            let channel = target.connect_lazy();
            channels.insert(service.clone(), channel);
        }
        Ok(Self { channels })
    }

    pub fn channel(&self, service: &str) -> Option<Channel> {
        self.channels.get(service).cloned()
    }

    /// Calls a unary method by its gRPC path.
    pub async fn unary(
        &self,
        service: &str,
        path: &str,
        output: MessageDescriptor,
        request: Request<DynamicMessage>,
    ) -> Result<Response<DynamicMessage>, Status> {
        let mut request = request;
        corebank_platform::tracing_otel::inject(request.metadata_mut());
        let mut grpc = self.client(service)?;
        grpc.ready().await.map_err(unavailable)?;
        grpc.unary(request, grpc_path(path)?, DynamicCodec::new(output))
            .await
    }

    /// Calls a server-streaming method by its gRPC path.
    pub async fn server_streaming(
        &self,
        service: &str,
        path: &str,
        output: MessageDescriptor,
        request: Request<DynamicMessage>,
    ) -> Result<Response<Streaming<DynamicMessage>>, Status> {
        let mut request = request;
        corebank_platform::tracing_otel::inject(request.metadata_mut());
        let mut grpc = self.client(service)?;
        grpc.ready().await.map_err(unavailable)?;
        grpc.server_streaming(request, grpc_path(path)?, DynamicCodec::new(output))
            .await
    }

    fn client(&self, service: &str) -> Result<tonic::client::Grpc<Channel>, Status> {
        let channel = self
            .channel(service)
            .ok_or_else(|| Status::unimplemented(format!("no backend serves {service}")))?;
        Ok(tonic::client::Grpc::new(channel))
    }
}

fn grpc_path(path: &str) -> Result<PathAndQuery, Status> {
    PathAndQuery::try_from(path).map_err(|_| Status::internal("invalid grpc path"))
}

fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("backend not ready: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(url: &str) -> HashMap<String, String> {
        HashMap::from([("corebank.v1.AccountService".to_owned(), url.to_owned())])
    }

    #[tokio::test]
    async fn with_tls_a_plain_http_backend_is_refused_at_start() {
        let tls = ClientTlsConfig::new();
        let error = Backends::new(
            &endpoints("http://127.0.0.1:50052"),
            Duration::from_secs(1),
            Some(&tls),
        )
        .expect_err("plain http with TLS configured");
        assert!(
            error.to_string().contains("AccountService"),
            "names the backend: {error}"
        );
        Backends::new(
            &endpoints("https://127.0.0.1:50052"),
            Duration::from_secs(1),
            Some(&tls),
        )
        .expect("https with TLS");
        Backends::new(
            &endpoints("http://127.0.0.1:50052"),
            Duration::from_secs(1),
            None,
        )
        .expect("plain http without TLS");
    }
}
