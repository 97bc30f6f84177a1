//! The `corebank` CLI as a script sees it, against one real corebank
//! process: exit codes per class of outcome (README's `## CLI` table),
//! negative amounts reaching the server's validation, a closed stdout
//! ending a command quietly, and `--json` on every command that prints.

use corebank_cli::services::SERVICES;
use corebank_tests::harness::{TestDb, amqp_url, lease_namespace};

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod exits;
mod json;
mod offline;

use cli::{Cli, text};
use common::{connect, database_url, free_ports, port, spawn_corebank_with};

/// The customer the sections share: two USD accounts of theirs, `from`
/// funded with 100.00.
struct Customer {
    id: String,
    from: String,
    to: String,
}

impl Customer {
    /// A customer with two accounts, one funded.
    async fn open(cli: &Cli) -> Customer {
        let customer = cli
            .json(&[
                "customer",
                "create",
                "--legal-name",
                "Grace Hopper",
                "--email",
                "grace@example.com",
                "--date-of-birth",
                "1986-12-09",
                "--country",
                "US",
                "--national-id",
                "123-45-6789",
                "--json",
            ])
            .await;
        let customer_id = text(&customer, "customerId");
        cli.json(&[
            "customer",
            "verify",
            &customer_id,
            "--reason",
            "passport checked",
            "--json",
        ])
        .await;
        let open = [
            "account",
            "open",
            "--customer-id",
            &customer_id,
            "--currency",
            "USD",
            "--json",
        ];
        let from = text(&cli.json(&open).await, "accountId");
        let to = text(&cli.json(&open).await, "accountId");
        let deposit = cli
            .json(&[
                "deposit",
                "--account-id",
                &from,
                "--amount",
                "100.00",
                "--currency",
                "USD",
                "--json",
            ])
            .await;
        assert_eq!(
            deposit["status"], "TRANSACTION_STATUS_COMPLETED",
            "{deposit}"
        );
        Customer {
            id: customer_id,
            from,
            to,
        }
    }

    /// The arguments of a transfer of `amount` USD from `from` to `to`.
    fn transfer<'a>(&'a self, amount: &'a str) -> [&'a str; 10] {
        [
            "transfer",
            "--from",
            self.from.as_str(),
            "--to",
            self.to.as_str(),
            "--amount",
            amount,
            "--currency",
            "USD",
            "--json",
        ]
    }
}

/// Every statement of README's exit-code table that a script relies on, one
/// corebank shared by all of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_script_can_trust_the_clis_exit_codes_pipes_and_json() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let namespace = lease.namespace();
    let ports = free_ports();
    let scratch = std::env::temp_dir().join(format!("{}-scripting", db.name));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let key = scratch.join("signing.key.pem");
    corebank_platform::auth::DevKey::load_or_create_at(&key).expect("a signing key");

    // Usage errors and an unreachable server need no corebank: they run
    // while it starts.
    let mut env: Vec<(String, String)> = vec![(
        "COREBANK_DEV_SIGNING_KEY".to_owned(),
        key.display().to_string(),
    )];
    let offline = Cli { env: env.clone() };
    let export_key = offline::keygen(&offline, &scratch).await;
    exits::usage_errors_and_an_unreachable_server(&offline).await;
    offline::token(&offline).await;

    let _corebank = spawn_corebank_with(
        &database_url(&db.name),
        namespace.as_str(),
        &ports,
        &key,
        &[("COREBANK_EXPORT_SIGNING_KEY", export_key.private.as_str())],
    );
    for service in SERVICES {
        connect(port(&ports, service.name())).await;
    }
    for service in [
        "customer",
        "account",
        "transaction",
        "orchestrator",
        "fraud",
        "reporting",
    ] {
        env.push((
            format!("COREBANK_{}_ENDPOINT", service.to_uppercase()),
            format!("http://{}", port(&ports, service)),
        ));
    }
    let cli = Cli { env };

    let customer = Customer::open(&cli).await;
    let transaction_id = exits::movements(&cli, &customer).await;
    exits::negative_amounts_and_refusals(&cli, &customer).await;
    exits::closed_pipes(&cli, &customer, &transaction_id).await;

    json::lists_and_shows(&cli, &customer, &transaction_id).await;
    json::checks(&cli, &database_url(&db.name)).await;
    json::exports(&cli, &scratch, &export_key.public).await;
    json::dead_letters(&cli, &amqp_url(), namespace.as_str()).await;
    // Last, as it throws the read models away.
    json::rebuild(&cli).await;

    drop(_corebank);
    let _ = std::fs::remove_dir_all(&scratch);
}
