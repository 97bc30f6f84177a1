//! `corebank token issue`, and the credentials every client command presents:
//! `COREBANK_TOKEN` when set, otherwise an operator token signed with the
//! development key (made on first use, as `corebank up` does).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use corebank_platform::auth::{
    Audience, ClientTlsArgs, Credentials, DEFAULT_INTERNAL_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_PARTNER_AUDIENCE, DevKey, PARTNER_SCOPES, STAFF_SCOPES, TokenSpec,
    development_key_path,
};
use corebank_platform::config::parse_duration;

use crate::output::outln;

#[derive(Debug, clap::Args)]
pub struct TokenCommand {
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(Debug, clap::Subcommand)]
enum TokenAction {
    /// Print a JWT signed with the development key (for the gateway, or an
    /// internal port with `--audience internal`).
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// Subject: the partner's id (its tenant), or a person or service.
    #[arg(long)]
    sub: String,
    /// Space-separated scopes, e.g. "customers:read customers:write".
    #[arg(long, default_value = "")]
    scope: String,
    /// Lifetime, e.g. 1h, 30m, 2d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Who the token is for: the REST gateway (partner) or internal gRPC ports.
    #[arg(long, default_value = "partner", value_parser = ["partner", "internal"])]
    audience: String,
    /// Issuer; must match the services' `--jwt-issuer`.
    #[arg(long, env = "COREBANK_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    issuer: String,
    /// The development signing key's file.
    #[arg(long, env = "COREBANK_DEV_SIGNING_KEY")]
    dev_signing_key: Option<PathBuf>,
    /// Print `{"token": …}` instead of the bare token.
    #[arg(long)]
    json: bool,
}

pub fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command.action {
        TokenAction::Issue(args) => {
            let key = dev_key(args.dev_signing_key.as_ref())?;
            let audience = if args.audience == "internal" {
                Audience::Internal
            } else {
                Audience::Partner
            };
            let mut spec = TokenSpec::new(args.sub, args.scope, audience).with_ttl(args.ttl);
            spec.issuer = args.issuer;
            spec.audience = env_or(
                match audience {
                    Audience::Partner => "COREBANK_PARTNER_AUDIENCE",
                    Audience::Internal => "COREBANK_INTERNAL_AUDIENCE",
                },
                match audience {
                    Audience::Partner => DEFAULT_PARTNER_AUDIENCE,
                    Audience::Internal => DEFAULT_INTERNAL_AUDIENCE,
                },
            );
            let token = key.issue(&spec)?;
            if args.json {
                outln!("{}", serde_json::json!({ "token": token }))?;
            } else {
                outln!("{token}")?;
            }
            Ok(())
        }
    }
}

/// A token for `subject` with `scopes`, signed with the development key for
/// the audience and issuer the services expect (`COREBANK_*` as `token issue`).
pub fn development_token(
    subject: &str,
    scopes: &str,
    audience: Audience,
) -> anyhow::Result<String> {
    let key = dev_key(env_path("COREBANK_DEV_SIGNING_KEY").as_ref())?;
    let mut spec = TokenSpec::new(subject, scopes, audience);
    spec.issuer = env_or("COREBANK_JWT_ISSUER", DEFAULT_ISSUER);
    spec.audience = match audience {
        Audience::Partner => env_or("COREBANK_PARTNER_AUDIENCE", DEFAULT_PARTNER_AUDIENCE),
        Audience::Internal => env_or("COREBANK_INTERNAL_AUDIENCE", DEFAULT_INTERNAL_AUDIENCE),
    };
    key.issue(&spec)
}

fn dev_key(path: Option<&PathBuf>) -> anyhow::Result<DevKey> {
    DevKey::load_or_create_at(&path.cloned().unwrap_or_else(development_key_path))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// What client commands present: `COREBANK_TOKEN`, else a development
/// operator token (internal audience, subject `$USER`, every staff and
/// partner scope: the bank's own operator, who registers the bank's own
/// customers and moves their money as well as deciding KYC) signed with the
/// development key; over TLS when `COREBANK_TLS_CA` is set (with
/// `COREBANK_TLS_CERT` and `COREBANK_TLS_KEY` for mTLS).
pub fn operator_credentials() -> anyhow::Result<Credentials> {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    if let Some(credentials) = CREDENTIALS.get() {
        return Ok(credentials.clone());
    }
    let token = std::env::var("COREBANK_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty());
    let mut credentials = match token {
        Some(token) => Credentials::bearer(&token)?,
        None => {
            let key = dev_key(env_path("COREBANK_DEV_SIGNING_KEY").as_ref())?;
            let subject = env_or("USER", "operator");
            let scopes = [STAFF_SCOPES, PARTNER_SCOPES].concat().join(" ");
            let mut spec = TokenSpec::new(subject, scopes, Audience::Internal);
            spec.issuer = env_or("COREBANK_JWT_ISSUER", DEFAULT_ISSUER);
            spec.audience = env_or("COREBANK_INTERNAL_AUDIENCE", DEFAULT_INTERNAL_AUDIENCE);
            Credentials::signed(key, spec)
        }
    };
    let tls = ClientTlsArgs {
        tls_cert: env_path("COREBANK_TLS_CERT"),
        tls_key: env_path("COREBANK_TLS_KEY"),
        tls_ca: env_path("COREBANK_TLS_CA"),
    };
    if let Some(tls) = tls.client_tls()? {
        credentials = credentials.with_tls(tls);
    }
    Ok(CREDENTIALS.get_or_init(|| credentials).clone())
}
