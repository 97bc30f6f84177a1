//! Who is calling and what they may do: JWT verification (EdDSA, ES256,
//! RS256; keys from a PEM file, a JWKS URL or the development key), the
//! scope each RPC declares in its proto, the one server layer every gRPC
//! service runs behind, and the credentials every client presents.
//!
//! Partner tokens (`aud = corebank`) reach the REST gateway only; internal
//! ports take internal tokens (`aud = corebank-internal`): a service's own, an
//! operator's, or the gateway's (scope `delegate`) forwarding a partner's
//! token in [`ON_BEHALF_OF`].

mod args;
mod cache;
mod credentials;
mod devkey;
mod jwks;
mod layer;
mod principal;
mod scope;
mod verify;

#[cfg(test)]
mod jwks_tests;
#[cfg(test)]
mod tests;

pub use args::{AuthArgs, ClientTlsArgs, ServerTlsArgs, ServiceAuth};
pub use credentials::{AuthedChannel, Credentials};
pub use devkey::{DevKey, TokenSpec, development_key_path};
pub use jwks::JwksCache;
pub use layer::{AuthLayer, AuthService};
pub use principal::{Principal, PrincipalKind, missing_scope};
pub use scope::{method_scopes, required_scope};
pub use verify::{Audience, AuthError, Authenticator, Claims, KeySource};

/// Metadata carrying a partner's or staff member's original JWT, forwarded by
/// the gateway; honoured only from a caller holding scope [`DELEGATE_SCOPE`].
pub const ON_BEHALF_OF: &str = "x-corebank-on-behalf-of";

/// The scope of a service-to-service token: every scope, no tenant.
pub const SERVICE_SCOPE: &str = "service";

/// The scope that lets a caller (the gateway) act for the principal of the
/// token it forwards in [`ON_BEHALF_OF`].
pub const DELEGATE_SCOPE: &str = "delegate";

/// Scopes held by bank staff; a token carrying any of them is not tenant-bound.
pub const STAFF_SCOPES: &[&str] = &["kyc:write", "fraud:review", "audit:read", "ops:admin"];

/// The staff scope of auditors.
pub const AUDIT_SCOPE: &str = "audit:read";

/// What [`AUDIT_SCOPE`] reads besides its own methods: every account, its
/// transactions and its statements, read only.
pub const AUDIT_READS: &[&str] = &["accounts:read", "transactions:read", "statements:read"];

/// Scopes a partner may hold; each reaches only its own customers' data.
pub const PARTNER_SCOPES: &[&str] = &[
    "customers:read",
    "customers:write",
    "accounts:read",
    "accounts:write",
    "payments:write",
    "transactions:read",
    "statements:read",
];

/// Default issuer of development tokens (`--jwt-issuer`).
pub const DEFAULT_ISSUER: &str = "corebank-dev";
/// Default audience of partner tokens (`--partner-audience`).
pub const DEFAULT_PARTNER_AUDIENCE: &str = "corebank";
/// Default audience of internal tokens (`--internal-audience`).
pub const DEFAULT_INTERNAL_AUDIENCE: &str = "corebank-internal";
