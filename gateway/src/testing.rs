//! A minimal HTTP/1.1 client for tests and scripts that talk to the
//! gateway (no HTTP client crate is otherwise in the tree).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A client for one gateway address.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `method path` with `headers` and `body`, reading the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<HttpResponse> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into()))?;
        let response = self.client.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    /// A JSON POST.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> anyhow::Result<HttpResponse> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, path, &all, serde_json::to_vec(body)?)
            .await
    }
}

/// The descriptor pool of corebank plus the test-only `corebank.test.v1`
/// protos under `gateway/tests/proto`, compiled now with protox (extension
/// options intact), as a later-added service would be.
pub fn echo_pool() -> anyhow::Result<prost_reflect::DescriptorPool> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut compiler =
        protox::Compiler::new([root.join("tests/proto"), root.join("../proto/proto")])?;
    compiler.include_imports(true);
    compiler.open_files(["corebank/test/v1/echo.proto"])?;
    let mut pool = prost_reflect::DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET)?;
    pool.decode_file_descriptor_set(compiler.encode_file_descriptor_set().as_slice())?;
    Ok(pool)
}

pub use echo::{ECHO_SERVICE, serve_echo};

#[path = "testing_echo.rs"]
mod echo;
