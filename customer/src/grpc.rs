//! `corebank.v1.CustomerService`: proto ⇄ domain, validation at the edge.

use corebank_platform::auth::Principal;
use corebank_platform::clock::SharedClock;
use corebank_platform::idempotency::{fingerprint, required_key};
use corebank_platform::paging::Page;
use corebank_platform::tenancy::Tenancy;
use corebank_platform::time::to_timestamp;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use corebank_proto::v1::customer_service_server::CustomerService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{
    self, Customer, KycAction, KycEvent, KycStatus, NewCustomer, NewCustomerInput,
};
use crate::store::{self, CustomerStore};

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    store: CustomerStore,
    clock: SharedClock,
}

impl CustomerApi {
    pub fn new(store: CustomerStore, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    async fn transition(
        &self,
        request: pb::KycTransitionRequest,
        action: KycAction,
        operation: &str,
    ) -> Result<pb::Customer, ApiError> {
        let mut violations = Violations::default();
        let customer_id = violations.take("customer_id", parse_id(&request.customer_id));
        let key = required_key(&mut violations, &request.idempotency_key);
        let decision = domain::parse_decision(&request.actor, &request.reason);
        let (actor, reason) = match decision {
            Ok(decision) if violations.is_empty() => decision,
            Ok(_) => return Err(violations.into_error()),
            Err(more) => {
                let mut all = violations;
                for violation in more.into_error().violations() {
                    all.add(violation.field.clone(), violation.description.clone());
                }
                return Err(all.into_error());
            }
        };
        let customer_id = customer_id.ok_or_else(|| violations_error("customer_id"))?;
        let fingerprint = fingerprint(
            operation,
            &pb::KycTransitionRequest {
                idempotency_key: String::new(),
                ..request.clone()
            },
        );
        let now = self.clock.now();
        self.store
            .idempotent(Some(&key), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let customer = store::transition(conn, customer_id, action, &actor, &reason, now).await?;
                    tracing::info!(%customer_id, to = customer.kyc_status.as_str(), %actor, "kyc status changed");
                    Ok(to_proto(&customer, false))
                })
            })
            .await
    }
}

fn violations_error(field: &str) -> ApiError {
    ApiError::invalid_field(field, "must be a UUID")
}

pub fn parse_id(text: &str) -> Result<Uuid, &'static str> {
    if text.is_empty() {
        return Err("is required");
    }
    Uuid::parse_str(text).map_err(|_| "must be a UUID")
}

pub fn status_to_proto(status: KycStatus) -> pb::KycStatus {
    match status {
        KycStatus::Pending => pb::KycStatus::Pending,
        KycStatus::Verified => pb::KycStatus::Verified,
        KycStatus::Rejected => pb::KycStatus::Rejected,
        KycStatus::Suspended => pb::KycStatus::Suspended,
    }
}

fn status_from_proto(status: pb::KycStatus) -> Option<KycStatus> {
    match status {
        pb::KycStatus::Unspecified => None,
        pb::KycStatus::Pending => Some(KycStatus::Pending),
        pb::KycStatus::Verified => Some(KycStatus::Verified),
        pb::KycStatus::Rejected => Some(KycStatus::Rejected),
        pb::KycStatus::Suspended => Some(KycStatus::Suspended),
    }
}

/// The scope that may see a national id in clear.
const KYC_SCOPE: &str = "kyc:write";

/// The request with `actor` set to the authenticated caller: the free-text
/// field a client sends is never recorded.
fn with_actor(
    request: Request<pb::KycTransitionRequest>,
) -> Result<pb::KycTransitionRequest, Status> {
    let actor = Principal::actor_of(&request)?;
    let mut request = request.into_inner();
    request.actor = actor;
    Ok(request)
}

/// What an unknown customer, or another partner's, is answered with.
fn customer_not_found(customer_id: Uuid) -> ApiError {
    ApiError::not_found(
        store::CUSTOMER_NOT_FOUND,
        format!("customer {customer_id} not found"),
    )
}

fn to_proto(customer: &Customer, reveal_national_id: bool) -> pb::Customer {
    pb::Customer {
        customer_id: customer.customer_id.to_string(),
        legal_name: customer.legal_name.clone(),
        email: customer.email.clone(),
        phone: customer.phone.clone(),
        date_of_birth: customer.date_of_birth.format("%Y-%m-%d").to_string(),
        country: customer.country.clone(),
        national_id: if reveal_national_id {
            customer.national_id.clone()
        } else {
            domain::mask_national_id(&customer.national_id)
        },
        kyc_status: status_to_proto(customer.kyc_status) as i32,
        kyc_version: customer.kyc_version,
        create_time: Some(to_timestamp(customer.created_at)),
        update_time: Some(to_timestamp(customer.updated_at)),
        partner_id: customer.partner_id.clone().unwrap_or_default(),
    }
}

fn event_to_proto(event: &KycEvent) -> pb::KycEvent {
    pb::KycEvent {
        kyc_event_id: event.kyc_event_id.to_string(),
        customer_id: event.customer_id.to_string(),
        from_status: status_to_proto(event.from_status) as i32,
        to_status: status_to_proto(event.to_status) as i32,
        actor: event.actor.clone(),
        reason: event.reason.clone(),
        create_time: Some(to_timestamp(event.created_at)),
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    #[tracing::instrument(skip_all)]
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        // The customer belongs to the partner whose token created it.
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let now = self.clock.now();
        let input = NewCustomerInput {
            legal_name: &request.legal_name,
            email: &request.email,
            phone: &request.phone,
            date_of_birth: &request.date_of_birth,
            country: &request.country,
            national_id: &request.national_id,
        };
        let parsed = NewCustomer::parse(input, now.date_naive());
        let mut violations = Violations::default();
        let key = required_key(&mut violations, &request.idempotency_key);
        let new = match parsed {
            Ok(new) => new,
            Err(field_errors) => {
                let error = field_errors.into_error();
                for violation in error.violations() {
                    violations.add(violation.field.clone(), violation.description.clone());
                }
                return Err(violations.into_error().into());
            }
        };
        violations.into_result()?;
        let fingerprint = fingerprint(
            &tenancy.scoped("CreateCustomer"),
            &pb::CreateCustomerRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let customer = self
            .store
            .idempotent(Some(&key), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let customer =
                        store::insert(conn, Uuid::now_v7(), &new, tenancy.owner(), now).await?;
                    tracing::info!(customer_id = %customer.customer_id, "customer created");
                    Ok(to_proto(&customer, false))
                })
            })
            .await?;
        Ok(Response::new(customer))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        if request.get_ref().reveal_national_id {
            // A national id in clear is for KYC staff only.
            Principal::of(&request)
                .ok_or_else(|| Status::unauthenticated("no authenticated caller"))?
                .require_scope(KYC_SCOPE)?;
        }
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let customer_id = parse_id(&request.customer_id)
            .map_err(|why| ApiError::invalid_field("customer_id", why))?;
        let customer = self.store.get(customer_id).await?;
        tenancy.check(customer.partner_id.as_deref(), || {
            customer_not_found(customer_id)
        })?;
        Ok(Response::new(to_proto(
            &customer,
            request.reveal_national_id,
        )))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let status = pb::KycStatus::try_from(request.kyc_status)
            .map_err(|_| ApiError::invalid_field("kyc_status", "is not a known KYC status"))?;
        let status = status_from_proto(status);
        let filter = format!(
            "kyc_status={}",
            status.map(KycStatus::as_str).unwrap_or("any")
        );
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut customers = self.store.list(status, tenancy.owner(), &page).await?;
        let next_page_token = page.finish(&mut customers, |c| c.customer_id.to_string(), &filter);
        Ok(Response::new(pb::ListCustomersResponse {
            customers: customers.iter().map(|c| to_proto(c, false)).collect(),
            next_page_token,
        }))
    }

    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let customer_id = violations.take("customer_id", parse_id(&request.customer_id));
        let email = request
            .email
            .as_deref()
            .and_then(|email| violations.take("email", domain::parse_email(email)));
        let phone = request
            .phone
            .as_deref()
            .and_then(|phone| violations.take("phone", domain::parse_phone(phone)));
        violations.check(
            request.email.is_some() || request.phone.is_some(),
            "email",
            "give email or phone to update",
        );
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let customer_id = customer_id.ok_or_else(|| violations_error("customer_id"))?;
        let owner = self.store.get(customer_id).await?.partner_id;
        tenancy.check(owner.as_deref(), || customer_not_found(customer_id))?;
        let now = self.clock.now();
        let fingerprint = fingerprint(
            &tenancy.scoped("UpdateCustomer"),
            &pb::UpdateCustomerRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let customer = self
            .store
            .idempotent(Some(&key), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let customer = store::update_contact(
                        conn,
                        customer_id,
                        email.as_deref(),
                        phone.as_deref(),
                        now,
                    )
                    .await?;
                    Ok(to_proto(&customer, false))
                })
            })
            .await?;
        Ok(Response::new(customer))
    }

    async fn verify_customer(
        &self,
        request: Request<pb::KycTransitionRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        Ok(Response::new(
            self.transition(with_actor(request)?, KycAction::Verify, "VerifyCustomer")
                .await?,
        ))
    }

    async fn reject_customer(
        &self,
        request: Request<pb::KycTransitionRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        Ok(Response::new(
            self.transition(with_actor(request)?, KycAction::Reject, "RejectCustomer")
                .await?,
        ))
    }

    async fn suspend_customer(
        &self,
        request: Request<pb::KycTransitionRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        Ok(Response::new(
            self.transition(with_actor(request)?, KycAction::Suspend, "SuspendCustomer")
                .await?,
        ))
    }

    async fn reinstate_customer(
        &self,
        request: Request<pb::KycTransitionRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        Ok(Response::new(
            self.transition(
                with_actor(request)?,
                KycAction::Reinstate,
                "ReinstateCustomer",
            )
            .await?,
        ))
    }

    async fn list_kyc_events(
        &self,
        request: Request<pb::ListKycEventsRequest>,
    ) -> Result<Response<pb::ListKycEventsResponse>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let customer_id = parse_id(&request.customer_id)
            .map_err(|why| ApiError::invalid_field("customer_id", why))?;
        let owner = self.store.get(customer_id).await?.partner_id;
        tenancy.check(owner.as_deref(), || customer_not_found(customer_id))?;
        let filter = format!("customer_id={customer_id}");
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut events = self.store.kyc_events(customer_id, &page).await?;
        let next_page_token = page.finish(&mut events, |e| e.kyc_event_id.to_string(), &filter);
        Ok(Response::new(pb::ListKycEventsResponse {
            kyc_events: events.iter().map(event_to_proto).collect(),
            next_page_token,
        }))
    }
}
