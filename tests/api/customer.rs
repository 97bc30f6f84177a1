//! CustomerService: creation, validation, listing, updates and the KYC lifecycle.

use corebank_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{OPERATOR, TestApp, key, reason, violated_fields};

pub(crate) fn decision(customer_id: &str) -> pb::KycTransitionRequest {
    pb::KycTransitionRequest {
        customer_id: customer_id.to_owned(),
        idempotency_key: key(),
        actor: "analyst-7".to_owned(),
        reason: "documents checked".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_customer_is_pending_and_can_be_read_back() {
    let app = TestApp::spawn().await;
    let request = app.new_customer_request();
    let created = app
        .customer
        .clone()
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.kyc_status, pb::KycStatus::Pending as i32);
    assert_eq!(created.email, request.email);

    let fetched = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: created.customer_id.clone(),
            reveal_national_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_national_id_is_masked_unless_asked_for_explicitly() {
    let app = TestApp::spawn().await;
    let request = app.new_customer_request();
    let created = app
        .customer
        .clone()
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(created.national_id, request.national_id);
    assert!(created.national_id.starts_with("****"));
    assert!(
        request
            .national_id
            .ends_with(created.national_id.trim_start_matches('*'))
    );

    let revealed = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: created.customer_id,
            reveal_national_id: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revealed.national_id, request.national_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_with_bad_fields_is_refused_naming_each_field_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let request = pb::CreateCustomerRequest {
        idempotency_key: key(),
        legal_name: String::new(),
        email: "not-an-email".to_owned(),
        phone: "0123".to_owned(),
        date_of_birth: "2020-01-01".to_owned(),
        country: "Germany".to_owned(),
        national_id: "!".to_owned(),
    };
    let status = app
        .customer
        .clone()
        .create_customer(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "VALIDATION_FAILED");
    assert_eq!(
        violated_fields(&status),
        [
            "legal_name",
            "email",
            "phone",
            "date_of_birth",
            "country",
            "national_id"
        ]
    );
    assert_eq!(app.count("customer.customer").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_customer_with_the_same_email_is_refused() {
    let app = TestApp::spawn().await;
    let request = app.new_customer_request();
    app.customer
        .clone()
        .create_customer(request.clone())
        .await
        .unwrap();
    let again = pb::CreateCustomerRequest {
        idempotency_key: key(),
        ..request
    };
    let status = app
        .customer
        .clone()
        .create_customer(again)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "CUSTOMER_ALREADY_EXISTS");
    assert_eq!(app.count("customer.customer").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_or_malformed_customer_id_is_answered_clearly() {
    let app = TestApp::spawn().await;
    let missing = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: uuid::Uuid::now_v7().to_string(),
            reveal_national_id: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "CUSTOMER_NOT_FOUND");

    let malformed = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: "42".to_owned(),
            reveal_national_id: false,
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&malformed), ["customer_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_are_listed_page_by_page_and_filtered_by_kyc_status() {
    let app = TestApp::spawn().await;
    let mut pending = Vec::new();
    for _ in 0..5 {
        pending.push(app.pending_customer().await);
    }
    let verified = app.verified_customer().await;

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .customer
            .clone()
            .list_customers(pb::ListCustomersRequest {
                page_size: 2,
                page_token,
                kyc_status: pb::KycStatus::Pending as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.customers.len() <= 2);
        seen.extend(page.customers.into_iter().map(|c| c.customer_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, pending);
    assert!(!seen.contains(&verified));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_token_cannot_be_used_with_another_filter() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.pending_customer().await;
    }
    let first = app
        .customer
        .clone()
        .list_customers(pb::ListCustomersRequest {
            page_size: 1,
            page_token: String::new(),
            kyc_status: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let status = app
        .customer
        .clone()
        .list_customers(pb::ListCustomersRequest {
            page_size: 1,
            page_token: first.next_page_token,
            kyc_status: pb::KycStatus::Verified as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn contact_details_can_be_updated_and_a_bad_email_changes_nothing() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let updated = app
        .customer
        .clone()
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: customer_id.clone(),
            idempotency_key: key(),
            email: Some("new.address@example.org".to_owned()),
            phone: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.email, "new.address@example.org");
    assert_eq!(updated.phone, "+441234567890");

    let status = app
        .customer
        .clone()
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: customer_id.clone(),
            idempotency_key: key(),
            email: Some("broken".to_owned()),
            phone: Some("+49151123456".to_owned()),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["email"]);
    let after = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id,
            reveal_national_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.email, "new.address@example.org");
    assert_eq!(after.phone, "+441234567890");
}

#[tokio::test(flavor = "multi_thread")]
async fn kyc_moves_through_its_legal_transitions_and_keeps_the_history() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let mut client = app.customer.clone();
    let verified = client
        .verify_customer(decision(&customer_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.kyc_status, pb::KycStatus::Verified as i32);
    let suspended = client
        .suspend_customer(decision(&customer_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(suspended.kyc_status, pb::KycStatus::Suspended as i32);
    let reinstated = client
        .reinstate_customer(decision(&customer_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reinstated.kyc_status, pb::KycStatus::Verified as i32);

    let history = client
        .list_kyc_events(pb::ListKycEventsRequest {
            customer_id,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .kyc_events;
    let moves: Vec<_> = history
        .iter()
        .map(|e| (e.from_status, e.to_status))
        .collect();
    use pb::KycStatus::*;
    assert_eq!(
        moves,
        [
            (Pending as i32, Verified as i32),
            (Verified as i32, Suspended as i32),
            (Suspended as i32, Verified as i32)
        ]
    );
    assert!(
        history
            .iter()
            .all(|e| e.actor == OPERATOR && e.reason == "documents checked")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_illegal_kyc_transition_is_refused_and_recorded_nowhere() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let mut client = app.customer.clone();
    client
        .reject_customer(decision(&customer_id))
        .await
        .unwrap();

    for status in [
        client
            .verify_customer(decision(&customer_id))
            .await
            .unwrap_err(),
        client
            .suspend_customer(decision(&customer_id))
            .await
            .unwrap_err(),
        client
            .reinstate_customer(decision(&customer_id))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "KYC_TRANSITION_NOT_ALLOWED");
    }
    assert_eq!(app.count("customer.kyc_event").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kyc_decision_needs_a_reason_and_its_actor_is_the_caller() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let status = app
        .customer
        .clone()
        .verify_customer(pb::KycTransitionRequest {
            customer_id,
            idempotency_key: key(),
            actor: " ".to_owned(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["reason"]);
    assert_eq!(app.count("customer.kyc_event").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kyc_history_cannot_be_edited_even_by_the_owner() {
    let app = TestApp::spawn().await;
    app.verified_customer().await;
    let result = sqlx::query("update customer.kyc_event set reason = 'rewritten'")
        .execute(&app.owner)
        .await;
    assert!(result.is_err(), "the history must be append-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_replays_the_first_customer() {
    let app = TestApp::spawn().await;
    let request = app.new_customer_request();
    let first = app
        .customer
        .clone()
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = app
        .customer
        .clone()
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(app.count("customer.customer").await, 1);

    let different = pb::CreateCustomerRequest {
        legal_name: "Someone Else".to_owned(),
        ..request
    };
    let status = app
        .customer
        .clone()
        .create_customer(different)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("customer.customer").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_key_create_exactly_one_customer() {
    let app = TestApp::spawn().await;
    let request = app.new_customer_request();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = app.customer.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            client.create_customer(request).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(customer) => {
                ids.insert(customer.into_inner().customer_id);
            }
            Err(status) => assert_eq!(reason(&status), "IDEMPOTENCY_KEY_IN_USE"),
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "every successful answer names the same customer"
    );
    assert_eq!(app.count("customer.customer").await, 1);
}
