//! `corebank.v1.AccountService`: proto ⇄ domain, validation at the edge.
//! Every request is validated completely (all bad fields named) before
//! anything is read or written.

mod convert;
mod feed;

use chrono::{DateTime, SubsecRound, Utc};
use corebank_platform::auth::Principal;
use corebank_platform::clock::SharedClock;
use corebank_platform::idempotency::fingerprint;
use corebank_platform::messaging;
use corebank_platform::money::{self, AmountLimits, Currency};
use corebank_platform::paging::Page;
use corebank_platform::tenancy::Tenancy;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_server::AccountService;
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, AccountAction, NewAccount};
use crate::kyc::CustomerDirectory;
use crate::store::{self, AccountStore};
use convert::*;

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct AccountApi {
    store: AccountStore,
    customers: CustomerDirectory,
    clock: SharedClock,
    limits: AmountLimits,
}

impl AccountApi {
    pub fn new(
        store: AccountStore,
        customers: CustomerDirectory,
        clock: SharedClock,
        limits: AmountLimits,
    ) -> Self {
        Self {
            store,
            customers,
            clock,
            limits,
        }
    }

    /// The time of a request, at the database's microsecond precision, so a
    /// response built from it equals the stored row read back later.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    async fn lifecycle(
        &self,
        request: Request<pb::AccountActionRequest>,
        action: AccountAction,
        operation: &str,
    ) -> Result<pb::Account, ApiError> {
        let tenancy = Tenancy::of(&request)?;
        // The actor is who the token says, never what the request claims.
        let actor = Principal::of(&request)
            .map(Principal::actor)
            .unwrap_or_default();
        let request = request.into_inner();
        let mut violations = Violations::default();
        let account_id = violations.take("account_id", parse_id(&request.account_id));
        let (_, reason) = domain::parse_decision(&mut violations, &actor, &request.reason);
        let key = Some(required_key(&mut violations, &request.idempotency_key));
        violations.into_result()?;
        let account_id =
            account_id.ok_or_else(|| ApiError::invalid_field("account_id", "must be a UUID"))?;
        let account = self.store.get_account(account_id).await?;
        tenancy.check(account.partner_id.as_deref(), || {
            store::account_not_found(account_id)
        })?;
        let fingerprint = fingerprint(
            &tenancy.scoped(operation),
            &pb::AccountActionRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let now = self.now();
        self.store
            .idempotent(key.as_deref(), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let (account, from) =
                        store::transition(conn, account_id, action, &actor, &reason, now).await?;
                    // In the same transaction as the change, so a replay of the
                    // request (answered from the key) publishes nothing more.
                    let event = status_changed(action, &account, from, &actor, &reason, now);
                    messaging::enqueue(conn, event)
                        .await
                        .map_err(ApiError::from)?;
                    tracing::info!(%account_id, action = action.as_str(), %actor, "account status changed");
                    Ok(account_to_proto(&account))
                })
            })
            .await
    }
}

impl AccountApi {
    /// The account named by `account_id`, if the caller may reach it; an
    /// account of another partner is answered exactly like an unknown one.
    async fn reachable_account<T>(
        &self,
        request: &Request<T>,
        account_id: &str,
    ) -> Result<domain::Account, ApiError> {
        let tenancy = Tenancy::of(request)?;
        let account_id = id_field("account_id", account_id)?;
        let account = self.store.get_account(account_id).await?;
        tenancy.check(account.partner_id.as_deref(), || {
            store::account_not_found(account_id)
        })?;
        Ok(account)
    }
}

fn hold_not_found(hold_id: Uuid) -> ApiError {
    ApiError::not_found(
        domain::reason::HOLD_NOT_FOUND,
        format!("hold {hold_id} not found"),
    )
}

fn journal_not_found(journal_id: Uuid) -> ApiError {
    ApiError::not_found(
        domain::reason::JOURNAL_NOT_FOUND,
        format!("journal {journal_id} not found"),
    )
}

fn customer_not_found(customer_id: Uuid) -> ApiError {
    ApiError::not_found(
        domain::reason::CUSTOMER_NOT_FOUND,
        format!("customer {customer_id} not found"),
    )
}

/// The value a parse left when `violations` is empty (so it is present).
fn present<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid_field(field, "is invalid"))
}

fn id_field(field: &str, text: &str) -> Result<Uuid, ApiError> {
    parse_id(text).map_err(|why| ApiError::invalid_field(field, why))
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    #[tracing::instrument(skip_all)]
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let customer_id = violations.take("customer_id", parse_id(&request.customer_id));
        let currency = if request.currency.is_empty() {
            violations.add("currency", "is required");
            None
        } else {
            violations.take("currency", Currency::parse(&request.currency))
        };
        let product = violations.take("product", product_from_proto(request.product));
        let overdraft_limit = match (currency, request.overdraft_limit.as_str()) {
            (_, "") => Some(Decimal::ZERO),
            (Some(currency), text) => violations.take(
                "overdraft_limit",
                money::parse_non_negative(currency, text, self.limits),
            ),
            (None, _) => None,
        };
        let key = Some(required_key(&mut violations, &request.idempotency_key));
        violations.into_result()?;
        let mut new = NewAccount {
            customer_id: present(customer_id, "customer_id")?,
            partner_id: None,
            currency: present(currency, "currency")?,
            product: present(product, "product")?,
            overdraft_limit: present(overdraft_limit, "overdraft_limit")?,
        };
        let fingerprint = fingerprint(
            &tenancy.scoped("OpenAccount"),
            &pb::OpenAccountRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let now = self.now();
        // The KYC check is a network hop, so it runs before the transaction;
        // a replay answers from the key without asking again.
        let replay = match key.as_deref() {
            Some(key) => self.store.has_response(key, &fingerprint, now).await?,
            None => false,
        };
        let kyc_version = if replay {
            None
        } else {
            let customer = self.customers.require_verified(new.customer_id).await?;
            // Another partner's customer is answered as unknown.
            tenancy.check(customer.partner_id.as_deref(), || {
                customer_not_found(new.customer_id)
            })?;
            new.partner_id = customer.partner_id;
            Some(customer.kyc_version)
        };
        let account = self
            .store
            .idempotent(key.as_deref(), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    // What the KYC check just saw seeds the local mirror, so the
                    // first debit need not wait for the KYC event to arrive.
                    if let Some(version) = kyc_version {
                        crate::kyc::record(conn, new.customer_id, "verified", version, now).await?;
                    }
                    let account = store::insert_account(conn, Uuid::now_v7(), &new, now).await?;
                    // Who owns it and since when, for consumers that keep
                    // account ages (fraud); in the same transaction as the row.
                    let opened = pb::AccountOpenedEvent {
                        account_id: account.account_id.to_string(),
                        customer_id: account.customer_id.to_string(),
                        currency: account.currency.code().to_owned(),
                        open_time: Some(corebank_platform::time::to_timestamp(account.created_at)),
                    };
                    let event = corebank_platform::messaging::OutgoingMessage::event_of(
                        corebank_proto::wire::event::ACCOUNT_OPENED,
                        &opened,
                    )
                    .with_occurred_at(now);
                    corebank_platform::messaging::enqueue(conn, event)
                        .await
                        .map_err(ApiError::from)?;
                    tracing::info!(account_id = %account.account_id, customer_id = %new.customer_id, "account opened");
                    Ok(account_to_proto(&account))
                })
            })
            .await?;
        Ok(Response::new(account))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let account = self
            .reachable_account(&request, &request.get_ref().account_id)
            .await?;
        Ok(Response::new(account_to_proto(&account)))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let customer_id = id_field("customer_id", &request.customer_id)?;
        let filter = format!("customer_id={customer_id}");
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut accounts = self
            .store
            .list_accounts(customer_id, tenancy.owner(), &page)
            .await?;
        let next_page_token = page.finish(&mut accounts, |a| a.account_id.to_string(), &filter);
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts.iter().map(account_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        let account = self
            .reachable_account(&request, &request.get_ref().account_id)
            .await?;
        Ok(Response::new(balance_to_proto(&account)))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let account_id = self
            .reachable_account(&request, &request.get_ref().account_id)
            .await?
            .account_id;
        let request = request.into_inner();
        let filter = format!("entries of account_id={account_id}");
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let mut entries = self.store.list_entries(account_id, &page).await?;
        let next_page_token = page.finish(&mut entries, |e| e.account_seq.to_string(), &filter);
        Ok(Response::new(pb::ListEntriesResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn freeze_account(
        &self,
        request: Request<pb::AccountActionRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(
            self.lifecycle(request, AccountAction::Freeze, "FreezeAccount")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn unfreeze_account(
        &self,
        request: Request<pb::AccountActionRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(
            self.lifecycle(request, AccountAction::Unfreeze, "UnfreezeAccount")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn close_account(
        &self,
        request: Request<pb::AccountActionRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(
            self.lifecycle(request, AccountAction::Close, "CloseAccount")
                .await?,
        ))
    }

    async fn get_hold(
        &self,
        request: Request<pb::GetHoldRequest>,
    ) -> Result<Response<pb::Hold>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let hold_id = id_field("hold_id", &request.get_ref().hold_id)?;
        let hold = self.store.get_hold(hold_id).await?;
        if tenancy != Tenancy::All {
            let account = self.store.get_account(hold.account_id).await?;
            tenancy.check(account.partner_id.as_deref(), || hold_not_found(hold_id))?;
        }
        Ok(Response::new(hold_to_proto(&hold, self.now())))
    }

    async fn get_journal(
        &self,
        request: Request<pb::GetJournalRequest>,
    ) -> Result<Response<pb::Journal>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let journal_id = id_field("journal_id", &request.get_ref().journal_id)?;
        let journal = self.store.get_journal(journal_id).await?;
        if tenancy != Tenancy::All {
            // A partner sees a journal that touches one of its accounts.
            let mut reached = false;
            for entry in &journal.entries {
                let account = self.store.get_account(entry.account_id).await?;
                reached |= tenancy.reaches(account.partner_id.as_deref());
            }
            if !reached {
                return Err(journal_not_found(journal_id).into());
            }
        }
        Ok(Response::new(journal_to_proto(&journal)))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        Ok(Response::new(
            self.ledger_entries(request.into_inner()).await?,
        ))
    }

    async fn get_ledger_summary(
        &self,
        request: Request<pb::GetLedgerSummaryRequest>,
    ) -> Result<Response<pb::LedgerSummary>, Status> {
        Ok(Response::new(
            self.ledger_summary(request.into_inner()).await?,
        ))
    }
}
