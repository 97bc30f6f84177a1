//! SQL for the `customer` schema. The pool is private: callers get
//! transactions through [`CustomerStore::idempotent`] and pass the connection
//! to the write functions, so one request composes its writes atomically.
//! Their errors are traced at INFO: most are the caller's (a duplicate, an
//! illegal KYC move), and an internal one is logged at ERROR where it becomes
//! a status.

use chrono::{DateTime, NaiveDate, Utc};
use corebank_platform::error::{ApiError, constraint};
use corebank_platform::idempotency::{self, IdempotencyConfig};
use corebank_platform::messaging::{self, OutgoingMessage};
use corebank_platform::paging::Page;
use corebank_proto::v1::CustomerKycChangedEvent;
use corebank_proto::wire;
use futures::future::BoxFuture;
use prost::Message;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Customer, KycAction, KycEvent, KycStatus, NewCustomer};

pub const CUSTOMER_NOT_FOUND: &str = "CUSTOMER_NOT_FOUND";
pub const CUSTOMER_ALREADY_EXISTS: &str = "CUSTOMER_ALREADY_EXISTS";
pub const KYC_TRANSITION_NOT_ALLOWED: &str = "KYC_TRANSITION_NOT_ALLOWED";

#[derive(Debug, Clone)]
pub struct CustomerStore {
    pool: PgPool,
    idempotency: IdempotencyConfig,
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    customer_id: Uuid,
    legal_name: String,
    email: String,
    phone: String,
    date_of_birth: NaiveDate,
    country: String,
    national_id: String,
    kyc_status: String,
    kyc_version: i64,
    partner_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<CustomerRow> for Customer {
    type Error = ApiError;

    fn try_from(row: CustomerRow) -> Result<Self, ApiError> {
        Ok(Customer {
            customer_id: row.customer_id,
            legal_name: row.legal_name,
            email: row.email,
            phone: row.phone,
            date_of_birth: row.date_of_birth,
            country: row.country,
            national_id: row.national_id,
            kyc_status: status(&row.kyc_status)?,
            kyc_version: row.kyc_version,
            partner_id: row.partner_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KycEventRow {
    kyc_event_id: Uuid,
    customer_id: Uuid,
    from_status: String,
    to_status: String,
    actor: String,
    reason: String,
    created_at: DateTime<Utc>,
}

fn status(text: &str) -> Result<KycStatus, ApiError> {
    KycStatus::parse(text).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!("unknown kyc status {text:?} in database"))
    })
}

const CUSTOMER_COLUMNS: &str = "customer_id, legal_name, email, phone, date_of_birth, country, national_id, kyc_status, kyc_version, partner_id, created_at, updated_at";

impl CustomerStore {
    pub fn new(pool: PgPool, idempotency: IdempotencyConfig) -> Self {
        Self { pool, idempotency }
    }

    /// Runs `effect` in one transaction, guarded by the idempotency key.
    pub async fn idempotent<Resp, F>(
        &self,
        key: Option<&str>,
        fingerprint: &[u8],
        now: DateTime<Utc>,
        effect: F,
    ) -> Result<Resp, ApiError>
    where
        Resp: prost::Message + Default,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Resp, ApiError>>,
    {
        idempotency::run(&self.pool, key, fingerprint, now, self.idempotency, effect).await
    }

    pub async fn get(&self, customer_id: Uuid) -> Result<Customer, ApiError> {
        let mut conn = self.pool.acquire().await?;
        get(&mut conn, customer_id, false).await
    }

    /// Customers by status, keyset-paged; for a partner, only its own.
    pub async fn list(
        &self,
        status: Option<KycStatus>,
        partner_id: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Customer>, ApiError> {
        let after = page
            .after
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| {
                ApiError::invalid_field("page_token", "is not a token issued for this query")
            })?;
        let rows: Vec<CustomerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {CUSTOMER_COLUMNS} from customer
             where ($1::text is null or kyc_status = $1) and ($2::uuid is null or customer_id > $2)
               and ($4::text is null or partner_id = $4)
             order by customer_id limit $3"
        )))
        .bind(status.map(KycStatus::as_str))
        .bind(after)
        .bind(page.fetch_limit())
        .bind(partner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Customer::try_from).collect()
    }

    pub async fn kyc_events(
        &self,
        customer_id: Uuid,
        page: &Page,
    ) -> Result<Vec<KycEvent>, ApiError> {
        let mut conn = self.pool.acquire().await?;
        get(&mut conn, customer_id, false).await?;
        let after = page
            .after
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| {
                ApiError::invalid_field("page_token", "is not a token issued for this query")
            })?;
        let rows: Vec<KycEventRow> = sqlx::query_as(
            "select kyc_event_id, customer_id, from_status, to_status, actor, reason, created_at
             from kyc_event where customer_id = $1 and ($2::uuid is null or kyc_event_id > $2)
             order by kyc_event_id limit $3",
        )
        .bind(customer_id)
        .bind(after)
        .bind(page.fetch_limit())
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(KycEvent {
                    kyc_event_id: row.kyc_event_id,
                    customer_id: row.customer_id,
                    from_status: status(&row.from_status)?,
                    to_status: status(&row.to_status)?,
                    actor: row.actor,
                    reason: row.reason,
                    created_at: row.created_at,
                })
            })
            .collect()
    }
}

/// Reads one customer; `for_update` locks the row for a transition.
pub async fn get(
    conn: &mut PgConnection,
    customer_id: Uuid,
    for_update: bool,
) -> Result<Customer, ApiError> {
    let lock = if for_update { " for update" } else { "" };
    let row: Option<CustomerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {CUSTOMER_COLUMNS} from customer where customer_id = $1{lock}"
    )))
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| {
        ApiError::not_found(
            CUSTOMER_NOT_FOUND,
            format!("customer {customer_id} not found"),
        )
    })?
    .try_into()
}

#[tracing::instrument(skip_all, fields(customer_id = %customer_id), err(level = "info"))]
pub async fn insert(
    conn: &mut PgConnection,
    customer_id: Uuid,
    new: &NewCustomer,
    partner_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Customer, ApiError> {
    let row: CustomerRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into customer (customer_id, legal_name, email, phone, date_of_birth, country, national_id,
                               kyc_status, partner_id, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, 'pending', $9, $8, $8)
         returning {CUSTOMER_COLUMNS}"
    )))
    .bind(customer_id)
    .bind(&new.legal_name)
    .bind(&new.email)
    .bind(&new.phone)
    .bind(new.date_of_birth)
    .bind(&new.country)
    .bind(&new.national_id)
    .bind(now)
    .bind(partner_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(|error| match constraint(&error) {
        Some("customer_email_unique") => ApiError::new(
            corebank_platform::ErrorCode::AlreadyExists,
            CUSTOMER_ALREADY_EXISTS,
            "a customer with this email already exists",
        ),
        // The message names the fields, never their values: the id is PII.
        Some("customer_national_id_unique") => ApiError::new(
            corebank_platform::ErrorCode::AlreadyExists,
            CUSTOMER_ALREADY_EXISTS,
            "a customer with this national id and country already exists",
        ),
        _ => ApiError::from(error),
    })?;
    row.try_into()
}

#[tracing::instrument(skip_all, fields(customer_id = %customer_id), err(level = "info"))]
pub async fn update_contact(
    conn: &mut PgConnection,
    customer_id: Uuid,
    email: Option<&str>,
    phone: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Customer, ApiError> {
    let row: Option<CustomerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update customer set email = coalesce($2, email), phone = coalesce($3, phone), updated_at = $4
         where customer_id = $1 returning {CUSTOMER_COLUMNS}"
    )))
    .bind(customer_id)
    .bind(email)
    .bind(phone)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|error| match constraint(&error) {
        Some("customer_email_unique") => ApiError::new(
            corebank_platform::ErrorCode::AlreadyExists,
            CUSTOMER_ALREADY_EXISTS,
            "another customer already uses this email",
        ),
        _ => ApiError::from(error),
    })?;
    row.ok_or_else(|| {
        ApiError::not_found(
            CUSTOMER_NOT_FOUND,
            format!("customer {customer_id} not found"),
        )
    })?
    .try_into()
}

/// Moves a customer as `action` says, appends the history row and enqueues the
/// `customer.kyc.changed` event, all in the caller's transaction; an illegal
/// move changes nothing.
#[tracing::instrument(skip_all, fields(customer_id = %customer_id, action = ?action), err(level = "info"))]
pub async fn transition(
    conn: &mut PgConnection,
    customer_id: Uuid,
    action: KycAction,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Customer, ApiError> {
    let current = get(conn, customer_id, true).await?;
    let from = current.kyc_status;
    let to = action.apply(from).map_err(|illegal| {
        ApiError::failed_precondition(KYC_TRANSITION_NOT_ALLOWED, illegal.to_string())
            .with_metadata("from", from.as_str())
            .with_metadata("to", illegal.to.as_str())
    })?;
    let kyc_version: i64 = sqlx::query_scalar(
        "update customer set kyc_status = $2, kyc_version = kyc_version + 1, updated_at = $3
         where customer_id = $1 returning kyc_version",
    )
    .bind(customer_id)
    .bind(to.as_str())
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "insert into kyc_event (kyc_event_id, customer_id, from_status, to_status, actor, reason, created_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(customer_id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(actor)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let event = CustomerKycChangedEvent {
        customer_id: customer_id.to_string(),
        from_status: from.as_str().to_owned(),
        to_status: to.as_str().to_owned(),
        sequence: kyc_version,
    };
    let message = OutgoingMessage::event(
        wire::event::CUSTOMER_KYC_CHANGED,
        wire::message_type::<CustomerKycChangedEvent>(),
        event.encode_to_vec(),
    )
    .with_occurred_at(now);
    messaging::enqueue(conn, message).await?;
    Ok(Customer {
        kyc_status: to,
        kyc_version,
        updated_at: now,
        ..current
    })
}

impl CustomerStore {}
