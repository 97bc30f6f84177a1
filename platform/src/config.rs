//! Configuration shared by every service: command-line flags, each with an
//! environment variable. Secrets are `SecretString`, so `Debug` never prints them.

use std::net::SocketAddr;
use std::time::Duration;

use rust_decimal::Decimal;
use secrecy::SecretString;

use crate::idempotency::IdempotencyConfig;
use crate::money::AmountLimits;

/// The owner login every command, script and test falls back to: the local
/// `postgres` superuser with the development password `scripts/up` sets on a
/// cluster it installed (a `trust` cluster ignores the password).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/corebank";

/// The local RabbitMQ's default login and vhost (`%2f` is `/`).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A duration flag like `24h`, `90m`, `45s` or `2d` (a whole number and
/// one unit), as people write them on a command line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit, e.g. 24h, 90m, 3600s or 2d"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number before the unit"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        "d" => number.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(seconds))
}

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`]: the one place tests, the
/// bench and tools read it.
pub fn database_url_from_env() -> String {
    env_or("DATABASE_URL", DEFAULT_DATABASE_URL)
}

/// `AMQP_URL`, or [`DEFAULT_AMQP_URL`].
pub fn amqp_url_from_env() -> String {
    env_or("AMQP_URL", DEFAULT_AMQP_URL)
}

/// The same server and login as `url`, on database `database` (tests create
/// their databases through `postgres`).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Where PostgreSQL is and how a service logs in.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Owner connection (migrations, provisioning); services derive their own
    /// login from it with their role and `--db-password`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: SecretString,
    /// Password of the per-service roles (`corebank_<service>`).
    #[arg(
        long,
        env = "COREBANK_DB_PASSWORD",
        default_value = "corebank-dev",
        hide_env_values = true
    )]
    pub db_password: SecretString,
    /// Connections per service pool.
    #[arg(long, env = "COREBANK_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
}

/// Logging, metrics and traces.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format: `pretty` for people, `json` for collectors, `auto` for
    /// `pretty` (in colour) when stderr is a terminal and `json` otherwise.
    /// Logs go to stderr; stdout is the command's own output.
    #[arg(long, env = "COREBANK_LOG_FORMAT", default_value = "auto", value_parser = ["auto", "pretty", "json"])]
    pub log_format: String,
    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Where `/metrics` is served (Prometheus text format).
    #[arg(long, env = "COREBANK_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: SocketAddr,
    /// Where spans are exported, OTLP over gRPC (`http://127.0.0.1:4317`);
    /// unset, no trace is recorded or exported.
    #[arg(long, env = "COREBANK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Rules applied to every request that carries money or an idempotency key.
#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// Largest single amount accepted, in major units.
    #[arg(long, env = "COREBANK_MAX_AMOUNT", default_value = "1000000000")]
    pub max_amount: Decimal,
    /// How long idempotency keys are remembered, in hours.
    #[arg(
        long,
        env = "COREBANK_IDEMPOTENCY_RETENTION_HOURS",
        default_value_t = 24
    )]
    pub idempotency_retention_hours: u64,
}

impl RequestArgs {
    pub fn amount_limits(&self) -> AmountLimits {
        AmountLimits {
            max: self.max_amount,
        }
    }

    pub fn idempotency(&self) -> IdempotencyConfig {
        IdempotencyConfig {
            retention: Duration::from_secs(self.idempotency_retention_hours * 3600),
            ..IdempotencyConfig::default()
        }
    }
}

impl Default for RequestArgs {
    fn default() -> Self {
        Self {
            max_amount: AmountLimits::default().max,
            idempotency_retention_hours: 24,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn with_database_swaps_only_the_database_keeping_login_and_options() {
        assert_eq!(
            with_database("postgres://u:p@h:5433/corebank", "postgres"),
            "postgres://u:p@h:5433/postgres"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "cbt_1"),
            "postgres://u@h/cbt_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "postgres"),
            "postgres://u@h:5432/postgres"
        );
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        db: DatabaseArgs,
    }

    #[test]
    fn the_database_password_never_appears_in_debug_output() {
        let cli = Cli::parse_from([
            "x",
            "--database-url",
            "postgres://u:s3cret@h/db",
            "--db-password",
            "hunter2",
        ]);
        let printed = format!("{cli:?}");
        assert!(!printed.contains("s3cret"));
        assert!(!printed.contains("hunter2"));
    }
}

/// Where RabbitMQ is and which namespace this deployment's names live under.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// The broker: `amqp://user:pass@host:5672/%2f`, or a comma-separated
    /// list of URLs, one per node of a RabbitMQ cluster. Connecting tries
    /// them in turn, each process starting from a random one and each
    /// reconnect from the next, so a process that lost its node moves on.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: SecretString,
    /// Prefix of every exchange and queue name; deployments sharing a broker differ here.
    #[arg(long, env = "COREBANK_NAMESPACE", default_value = "corebank")]
    pub namespace: String,
    /// Seconds between AMQP heartbeats, unless the URL sets `heartbeat=`; a
    /// link silent for two of them is taken for dead and replaced (0: the
    /// broker's interval, 60 s by default).
    #[arg(long, env = "COREBANK_AMQP_HEARTBEAT_SECS", default_value_t = crate::messaging::DEFAULT_HEARTBEAT_SECS)]
    pub amqp_heartbeat_secs: u16,
}

impl AmqpArgs {
    /// A lazily connecting broker handle named after `service`.
    pub fn broker(&self, service: &str) -> crate::messaging::Broker {
        let config = crate::messaging::BrokerConfig::new(
            self.amqp_url.clone(),
            crate::messaging::Namespace::new(self.namespace.clone()),
            format!("corebank-{service}"),
        );
        crate::messaging::Broker::new(crate::messaging::BrokerConfig {
            heartbeat_secs: self.amqp_heartbeat_secs,
            ..config
        })
    }
}
