//! Auditor exports made by the running service: byte-identical when made
//! again, verified offline with the published key, chained across periods,
//! refused while the read model is behind.

use std::collections::BTreeMap;

use chrono::Duration as ChronoDuration;
use corebank_platform::time::to_timestamp;
use corebank_reporting::domain::export::{self, ExportBytes, PreviousManifest};

use super::*;
use crate::helpers::{reason, violated_fields};

/// The four files of an export, by name, from the download stream.
async fn download(app: &TestApp, export_id: &str) -> BTreeMap<String, Vec<u8>> {
    let mut stream = app
        .reporting
        .clone()
        .download_export(pb::DownloadExportRequest {
            export_id: export_id.to_owned(),
        })
        .await
        .expect("download")
        .into_inner();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    while let Some(chunk) = stream.message().await.expect("a chunk") {
        let file = files.entry(chunk.file_name.clone()).or_default();
        assert_eq!(chunk.offset, file.len() as i64, "chunks in order");
        file.extend_from_slice(&chunk.data);
    }
    files
}

fn bytes(files: &BTreeMap<String, Vec<u8>>) -> ExportBytes<'_> {
    ExportBytes {
        jsonl: &files["entries.jsonl"],
        csv: &files["entries.csv"],
        manifest: &files["manifest.json"],
        signature: &files["manifest.sig"],
    }
}

async fn create(
    app: &TestApp,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    accounts: &[String],
) -> Result<pb::Export, tonic::Status> {
    app.reporting
        .clone()
        .create_export(pb::CreateExportRequest {
            idempotency_key: key(),
            period_start: Some(to_timestamp(start)),
            period_end: Some(to_timestamp(end)),
            account_ids: accounts.to_vec(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The published public key that signed `export`.
async fn public_key(app: &TestApp, export: &pb::Export) -> export::VerifyingKey {
    let keys = app
        .reporting
        .clone()
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .expect("signing keys")
        .into_inner()
        .keys;
    let key = keys
        .iter()
        .find(|key| key.key_id == export.key_id)
        .expect("the export's key is published");
    assert!(key.active);
    export::parse_public_key_pem(&key.public_key_pem).expect("a public key")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_made_twice_is_byte_identical_and_verifies_offline_with_a_proof() {
    let app = TestApp::spawn().await;
    approve_everything(&app).await;
    let start = app.clock.now();
    let accounts = funded_accounts(&app, 3, "100.00").await;
    random_load(&app, &accounts, 30, 3).await;
    app.clock.advance(ChronoDuration::minutes(1));
    let end = app.clock.now();
    app.clock.advance(ChronoDuration::minutes(1));
    caught_up(&app).await;

    let first = create(&app, start, end, &[]).await.expect("export");
    let again = create(&app, start, end, &[]).await.expect("export again");
    assert_ne!(first.export_id, again.export_id);
    assert_eq!(first.row_count, app.count("account.entry").await);
    let first_files = download(&app, &first.export_id).await;
    let again_files = download(&app, &again.export_id).await;
    assert_eq!(first_files["entries.jsonl"], again_files["entries.jsonl"]);
    assert_eq!(first_files["entries.csv"], again_files["entries.csv"]);
    assert_eq!(first.merkle_root, again.merkle_root);
    assert_eq!(first.chain_head, again.chain_head);
    assert_eq!(first_files["entries.jsonl"].len() as i64, first.jsonl_size);

    let key = public_key(&app, &first).await;
    let report = export::verify(bytes(&first_files), &key, None).expect("the export verifies");
    assert_eq!(report.manifest.row_count, first.row_count as u64);

    // One journal's lines, proven against the signed root alone.
    let journal_id: uuid::Uuid = sqlx::query_scalar(
        "select journal_id from account.journal order by ledger_seq desc limit 1",
    )
    .fetch_one(&app.owner)
    .await
    .expect("a journal");
    let proof = export::prove(bytes(&first_files), journal_id).expect("a proof");
    assert_eq!(proof.lines.len(), 2, "a journal has two entries");
    export::verify_proof(&proof, &key).expect("the proof verifies");
    let mut forged = proof.clone();
    forged.lines[0].line = forged.lines[0]
        .line
        .replacen("\"amount\":\"", "\"amount\":\"9", 1);
    assert!(
        export::verify_proof(&forged, &key).is_err(),
        "a forged proof fails"
    );

    // A scoped export holds only its accounts' lines.
    let scoped = create(&app, start, end, &accounts[..1])
        .await
        .expect("scoped export");
    let ledger_rows = ledger_entries(&app, &accounts[0]).await.len() as i64;
    assert_eq!(scoped.row_count, ledger_rows);
    assert_eq!(scoped.account_ids, vec![accounts[0].clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn consecutive_exports_chain_and_a_missing_period_is_detected() {
    let app = TestApp::spawn().await;
    let account = app.funded_account("100.00").await.account_id;
    let other = app.funded_account("5.00").await.account_id;
    let t0 = app.clock.now();
    let mut bounds = vec![t0];
    for _ in 0..3 {
        app.clock.advance(ChronoDuration::hours(1));
        app.transfer(&account, &other, "1.00").await;
        app.clock.advance(ChronoDuration::hours(1));
        bounds.push(app.clock.now());
    }
    app.clock.advance(ChronoDuration::minutes(1));
    caught_up(&app).await;
    let mut exports = Vec::new();
    for window in bounds.windows(2) {
        exports.push(
            create(&app, window[0], window[1], &[])
                .await
                .expect("export"),
        );
    }
    assert_eq!(exports[0].previous_export_id, "");
    assert_eq!(exports[1].previous_export_id, exports[0].export_id);
    assert_eq!(exports[1].previous_chain_head, exports[0].chain_head);
    assert_eq!(exports[2].previous_export_id, exports[1].export_id);
    let files: Vec<_> = {
        let mut out = Vec::new();
        for made in &exports {
            out.push(download(&app, &made.export_id).await);
        }
        out
    };
    let key = public_key(&app, &exports[0]).await;
    let previous = |index: usize| PreviousManifest {
        manifest: &files[index]["manifest.json"],
        signature: Some(&files[index]["manifest.sig"]),
        public_key: None,
    };
    export::verify(bytes(&files[2]), &key, Some(previous(1))).expect("third after second");
    let problems = export::verify(bytes(&files[2]), &key, Some(previous(0)))
        .expect_err("the second period is missing");
    let text = format!("{problems:?}");
    assert!(text.contains("missing"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_is_refused_for_a_period_not_ended_or_a_read_model_behind_the_ledger() {
    let app = TestApp::spawn().await;
    let start = app.clock.now();
    app.funded_account("100.00").await;
    caught_up(&app).await;
    let now = app.clock.now();
    let open = create(&app, start, now + ChronoDuration::hours(1), &[])
        .await
        .expect_err("a period that has not ended");
    assert_eq!(open.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&open), ["period_end"]);
    let bad = app
        .reporting
        .clone()
        .create_export(pb::CreateExportRequest {
            idempotency_key: key(),
            period_start: None,
            period_end: Some(to_timestamp(start)),
            account_ids: vec!["nope".to_owned()],
        })
        .await
        .expect_err("bad request");
    assert_eq!(violated_fields(&bad), ["period_start", "account_ids[0]"]);

    app.clock.advance(ChronoDuration::minutes(1));
    sqlx::query("delete from reporting.entry where entry_id in (select entry_id from reporting.entry limit 1)")
        .execute(&app.owner)
        .await
        .expect("lose an entry");
    let behind = create(&app, start, now + ChronoDuration::seconds(1), &[])
        .await
        .expect_err("the read model lacks an entry");
    assert_eq!(behind.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&behind), "PROJECTION_BEHIND");
    assert_eq!(app.count("reporting.export").await, 0, "nothing was made");
}
