//! What every server provides: health, reflection, and schema isolation.

use corebank_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::TestApp;

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_serving_for_every_service() {
    let app = TestApp::spawn().await;
    for (addr, service) in [
        (app.customer_addr, corebank_customer::GRPC_SERVICE),
        (app.account_addr, corebank_account::GRPC_SERVICE),
    ] {
        let mut health = HealthClient::new(channel(addr).await);
        for name in ["", service] {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: name.to_owned(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                answer.status,
                ServingStatus::Serving as i32,
                "{service} {name:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services() {
    let app = TestApp::spawn().await;
    // Reflection, unlike health, answers authenticated callers only.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.account_addr)).unwrap();
    let mut reflection =
        ServerReflectionClient::new(app.credentials.connect_lazy(endpoint).unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"corebank.v1.AccountService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"corebank.v1.CustomerService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_role_is_confined_to_its_own_schema() {
    let app = TestApp::spawn().await;
    app.verified_customer().await;
    let account_pool = app.db.service_pool(&corebank_account::SCHEMA, 1).await;
    let customer_pool = app.db.service_pool(&corebank_customer::SCHEMA, 1).await;

    let denied = sqlx::query("select count(*) from customer.customer")
        .fetch_one(&account_pool)
        .await
        .unwrap_err();
    assert_eq!(
        corebank_platform::error::sqlstate(&denied).as_deref(),
        Some("42501"),
        "{denied}"
    );
    let denied = sqlx::query("select count(*) from account.account")
        .fetch_one(&customer_pool)
        .await
        .unwrap_err();
    assert_eq!(
        corebank_platform::error::sqlstate(&denied).as_deref(),
        Some("42501"),
        "{denied}"
    );

    let own: i64 = sqlx::query_scalar("select count(*) from customer")
        .fetch_one(&customer_pool)
        .await
        .unwrap();
    assert_eq!(own, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_twice_changes_nothing() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let password = secrecy::SecretString::from(corebank_tests::harness::ROLE_PASSWORD);
    for spec in [corebank_customer::SCHEMA, corebank_account::SCHEMA] {
        corebank_platform::db::provision(&app.db.owner_options, &spec, &password)
            .await
            .unwrap();
    }
    let fetched = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id,
            reveal_national_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.kyc_status, pb::KycStatus::Verified as i32);
}
