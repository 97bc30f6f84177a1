//! No RPC moves money, and the audit catches money that moved anyway: a
//! journal no saga posted breaks an invariant.

use corebank_proto::v1 as pb;
use prost::Message;
use tonic::Code;

use crate::helpers::TestApp;

/// The methods of `service` in the descriptor set every server is built from.
fn methods_of(service: &str) -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(corebank_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    set.file
        .iter()
        .filter(|file| file.package() == "corebank.v1")
        .flat_map(|file| file.service.iter())
        .filter(|s| s.name() == service)
        .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
        .collect()
}

#[test]
fn the_account_service_reads_and_manages_accounts_but_moves_no_money() {
    let mut methods = methods_of("AccountService");
    methods.sort();
    // Reads, and lifecycle changes that touch no balance, hold or journal.
    // Anything new here must be reviewed: money moves only as saga commands.
    let mut allowed = vec![
        "OpenAccount",
        "GetAccount",
        "ListAccounts",
        "GetBalance",
        "ListEntries",
        "FreezeAccount",
        "UnfreezeAccount",
        "CloseAccount",
        "GetHold",
        "GetJournal",
        "ListLedgerEntries",
        "GetLedgerSummary",
    ];
    allowed.sort();
    assert_eq!(methods, allowed);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_old_money_moving_methods_are_gone_from_the_account_port() {
    let app = TestApp::spawn().await;
    let account = app.funded_account("10").await;
    for method in ["PlaceHold", "CaptureHold", "ReleaseHold", "PostDeposit"] {
        // With the operator's token: the method is gone, not merely refused.
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", app.account_addr))
                .unwrap();
        let mut grpc = tonic::client::Grpc::new(app.credentials.connect_lazy(endpoint).unwrap());
        grpc.ready().await.expect("account service ready");
        let path = http::uri::PathAndQuery::from_maybe_shared(format!(
            "/corebank.v1.AccountService/{method}"
        ))
        .unwrap();
        // A request shaped like the old ones: an account and an amount.
        let request = pb::GetAccountRequest {
            account_id: account.account_id.clone(),
        };
        let status = grpc
            .unary::<_, pb::Account, _>(
                tonic::Request::new(request),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{method}: {status:?}");
    }
    assert_eq!(
        app.balance(&account.account_id)
            .await
            .ledger
            .unwrap()
            .amount,
        "10.00"
    );
    assert_eq!(app.count("account.journal").await, 1);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_no_saga_posted_breaks_the_audit() {
    let app = TestApp::spawn().await;
    let account = app.funded_account("10").await;
    app.assert_invariants().await;
    let settlement: String = sqlx::query_scalar(
        "select account_id::text from account.account where product = 'settlement' and currency = 'USD'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();

    // As the owner: 500.00 from nowhere, balanced, with the balances kept
    // equal to their entries, so only the saga invariant can catch it.
    let mut tx = app.owner.begin().await.unwrap();
    let journal_id = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into account.journal (journal_id, kind, reference, created_at)
         values ($1, 'deposit', 'forged', now())",
    )
    .bind(journal_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    for (account_id, direction, delta) in [
        (account.account_id.as_str(), "credit", 500),
        (settlement.as_str(), "debit", -500),
    ] {
        sqlx::query(
            "with moved as (
                update account.account set ledger_balance = ledger_balance + $3
                where account_id = $1::uuid returning ledger_balance)
             insert into account.entry
                (entry_id, journal_id, account_id, currency, direction, amount, balance_after, account_seq, created_at)
             select $4, $5, $1::uuid, 'USD', $2, 500, moved.ledger_balance,
                (select coalesce(max(account_seq), 0) + 1 from account.entry where account_id = $1::uuid), now()
             from moved",
        )
        .bind(account_id)
        .bind(direction)
        .bind(rust_decimal::Decimal::from(delta))
        .bind(uuid::Uuid::now_v7())
        .bind(journal_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let report = corebank_audit::check(&app.owner).await.unwrap();
    assert_eq!(report.journals_outside_a_saga, 1, "{report:?}");
    assert_eq!(report.unbalanced_journals, 0);
    assert_eq!(report.balance_mismatches, 0);
    assert!(!report.ok());
    assert!(
        report
            .violations()
            .iter()
            .any(|line| line.contains("journals posted outside a saga")),
        "{:?}",
        report.violations()
    );
}
