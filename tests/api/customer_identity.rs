//! Who a customer is, checked at creation: an ISO 3166 country, one customer
//! per national id and country within its owner (never echoed back), and the
//! idempotency key every create and update needs.

use corebank_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::customer::decision;
use crate::helpers::{TestApp, key, reason, violated_fields};

#[tokio::test(flavor = "multi_thread")]
async fn a_country_code_iso_3166_does_not_assign_is_refused() {
    let app = TestApp::spawn().await;
    for country in ["XX", "ZZ", "UK", "gb"] {
        let status = app
            .customer
            .clone()
            .create_customer(pb::CreateCustomerRequest {
                country: country.to_owned(),
                ..app.new_customer_request()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{country}");
        assert_eq!(violated_fields(&status), ["country"], "{country}");
    }
    assert_eq!(app.count("customer.customer").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_customer_with_the_same_national_id_and_country_is_refused_without_echoing_it() {
    let app = TestApp::spawn().await;
    let first = app.new_customer_request();
    app.customer
        .clone()
        .create_customer(first.clone())
        .await
        .unwrap();
    let national_id = first.national_id.clone();
    // Another key and email, the same person; the id as typed differently.
    let duplicate = pb::CreateCustomerRequest {
        national_id: format!(" {} ", national_id.to_lowercase()),
        ..app.new_customer_request()
    };
    let status = app
        .customer
        .clone()
        .create_customer(duplicate)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "CUSTOMER_ALREADY_EXISTS");
    let details = format!("{:?}", status.get_error_details());
    let raw = String::from_utf8_lossy(status.details()).to_uppercase();
    for text in [status.message(), details.as_str(), raw.as_str()] {
        assert!(
            !text.to_uppercase().contains(&national_id),
            "the national id leaked: {text}"
        );
    }
    assert_eq!(app.count("customer.customer").await, 1);

    // The same id issued by another country is another person.
    app.customer
        .clone()
        .create_customer(pb::CreateCustomerRequest {
            national_id,
            country: "FR".to_owned(),
            ..app.new_customer_request()
        })
        .await
        .unwrap();
    assert_eq!(app.count("customer.customer").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_partner_cannot_learn_another_partners_customers_by_creating_them() {
    let app = TestApp::spawn().await;
    let scopes = "customers:read customers:write";
    let (acme, globex) = (
        app.partner("acme", scopes).await,
        app.partner("globex", scopes).await,
    );
    let person = app.new_customer_request();
    acme.customer
        .clone()
        .create_customer(person.clone())
        .await
        .expect("acme's customer");
    // The same person (email and national id) signing up with another
    // partner is that partner's customer: nothing tells it acme has them.
    let globex_customer = globex
        .customer
        .clone()
        .create_customer(pb::CreateCustomerRequest {
            idempotency_key: key(),
            ..person.clone()
        })
        .await
        .expect("globex's customer, the same person")
        .into_inner();
    assert_eq!(globex_customer.partner_id, "globex");
    // Within one partner the person is still one customer, by either field.
    for duplicate in [
        pb::CreateCustomerRequest {
            national_id: app.new_customer_request().national_id,
            ..person.clone()
        },
        pb::CreateCustomerRequest {
            email: app.new_customer_request().email,
            ..person.clone()
        },
    ] {
        let status = globex
            .customer
            .clone()
            .create_customer(pb::CreateCustomerRequest {
                idempotency_key: key(),
                ..duplicate
            })
            .await
            .expect_err("a second customer of globex with one email or national id");
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    }
    assert_eq!(app.count("customer.customer").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_person_make_exactly_one_customer() {
    let app = TestApp::spawn().await;
    let national_id = app.new_customer_request().national_id;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = app.customer.clone();
        let request = pb::CreateCustomerRequest {
            national_id: national_id.clone(),
            ..app.new_customer_request()
        };
        tasks.push(tokio::spawn(async move {
            client.create_customer(request).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.count("customer.customer").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_request_without_a_usable_idempotency_key_is_refused() {
    let app = TestApp::spawn().await;
    for blank in ["", " ", "\t \n", "a\rb"] {
        let status = app
            .customer
            .clone()
            .create_customer(pb::CreateCustomerRequest {
                idempotency_key: blank.to_owned(),
                ..app.new_customer_request()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{blank:?}");
        assert_eq!(violated_fields(&status), ["idempotency_key"], "{blank:?}");
    }
    assert_eq!(app.count("customer.customer").await, 0);

    let customer_id = app.pending_customer().await;
    let status = app
        .customer
        .clone()
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: customer_id.clone(),
            idempotency_key: "   ".to_owned(),
            email: Some("new@example.com".to_owned()),
            phone: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    let status = app
        .customer
        .clone()
        .verify_customer(pb::KycTransitionRequest {
            idempotency_key: String::new(),
            ..decision(&customer_id)
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    assert_eq!(app.count("customer.kyc_event").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn updating_a_customer_replays_its_key_and_refuses_it_for_another_update() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let request = pb::UpdateCustomerRequest {
        customer_id: customer_id.clone(),
        idempotency_key: key(),
        email: Some(format!("new.{}@example.com", &key()[..8])),
        phone: None,
    };
    let first = app
        .customer
        .clone()
        .update_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    // Changed in between by another request: the replay answers the first response.
    app.customer
        .clone()
        .update_customer(pb::UpdateCustomerRequest {
            idempotency_key: key(),
            email: None,
            phone: Some("+4915112345678".to_owned()),
            ..request.clone()
        })
        .await
        .unwrap();
    let replayed = app
        .customer
        .clone()
        .update_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, first);

    let status = app
        .customer
        .clone()
        .update_customer(pb::UpdateCustomerRequest {
            email: Some("other@example.com".to_owned()),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    let stored = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id,
            reveal_national_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.email, first.email);
}
