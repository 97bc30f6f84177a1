//! `corebank.v1.TransactionService`: proto ⇄ domain, validation at the edge.

use chrono::SubsecRound;
use std::pin::Pin;
use std::time::Duration;

use corebank_platform::clock::SharedClock;
use corebank_platform::idempotency::fingerprint;
use corebank_platform::messaging;
use corebank_platform::money::AmountLimits;
use corebank_platform::paging::Page;
use corebank_platform::tenancy::Tenancy;
use corebank_platform::time::from_timestamp;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use corebank_proto::v1::transaction_service_server::TransactionService;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::accounts::AccountDirectory;
use crate::domain::{self, NewTransaction, NewTransactionInput, Transaction, TransactionKind};
use crate::messages;
use crate::store::{self, ListFilter, TransactionStore};
use crate::watch::{self, StatusHub};

mod convert;
mod wait;

use convert::{is_terminal, money_input, status_from_proto};
pub use convert::{status_to_proto, to_proto};
use wait::{caller_timeout, effective_wait};

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct TransactionApi {
    store: TransactionStore,
    accounts: AccountDirectory,
    hub: StatusHub,
    clock: SharedClock,
    limits: AmountLimits,
    shutdown: CancellationToken,
}

/// A create request, whatever its kind, after the proto is taken apart.
struct CreateRequest<'a> {
    operation: &'static str,
    tenancy: Tenancy,
    idempotency_key: &'a str,
    input: NewTransactionInput<'a>,
    wait: Option<&'a prost_types::Duration>,
    fingerprint: Vec<u8>,
    caller_timeout: Option<Duration>,
}

impl TransactionApi {
    /// A partner reads a transaction that touches one of its accounts;
    /// any other is answered as unknown.
    async fn check_reach(
        &self,
        tenancy: &Tenancy,
        transaction: &Transaction,
    ) -> Result<(), ApiError> {
        let accounts = [
            transaction.source_account_id,
            transaction.destination_account_id,
        ];
        if self
            .accounts
            .reaches_any(tenancy, accounts.into_iter().flatten())
            .await?
        {
            return Ok(());
        }
        Err(ApiError::not_found(
            store::TRANSACTION_NOT_FOUND,
            format!("transaction {} not found", transaction.transaction_id),
        ))
    }

    pub fn new(
        store: TransactionStore,
        accounts: AccountDirectory,
        hub: StatusHub,
        clock: SharedClock,
        limits: AmountLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            accounts,
            hub,
            clock,
            limits,
            shutdown,
        }
    }

    /// Validates, stores the PENDING transaction with its history row and its
    /// `*.requested` event in one idempotent database transaction, then
    /// (outside it) waits for a terminal status if asked to.
    async fn create(&self, request: CreateRequest<'_>) -> Result<pb::Transaction, ApiError> {
        let mut violations = Violations::default();
        violations.take("idempotency_key", parse_key(request.idempotency_key));
        let new = NewTransaction::parse(request.input, self.limits, &mut violations);
        let wait = request
            .wait
            .map(|wait| domain::parse_wait(wait.seconds, wait.nanos))
            .unwrap_or(Ok(Duration::ZERO));
        let wait = violations.take("wait", wait);
        violations.into_result()?;
        let (Some(new), Some(wait)) = (new, wait) else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "a valid create request did not parse"
            )));
        };
        // A partner moves money only from (or, for a deposit, into) its own
        // accounts; another's is answered as unknown.
        let (field, debited) = match new.kind {
            TransactionKind::Deposit => ("account_id", new.destination_account_id),
            TransactionKind::Withdrawal => ("account_id", new.source_account_id),
            TransactionKind::Transfer => ("source_account_id", new.source_account_id),
        };
        if let Some(account_id) = debited
            && !self.accounts.reaches(&request.tenancy, account_id).await?
        {
            return Err(ApiError::not_found(
                "ACCOUNT_NOT_FOUND",
                format!("account {account_id} not found"),
            )
            .with_metadata("field", field));
        }

        // At the database's precision, so the answer equals a later read.
        let now = self.clock.now().trunc_subsecs(6);
        let wait = effective_wait(wait, request.caller_timeout);
        // Subscribed before the transaction is written, a waiter hears of
        // every change after it and need not read it back first.
        let transaction_id = Uuid::now_v7();
        let subscription = (!wait.is_zero()).then(|| self.hub.subscribe(transaction_id));
        // The request's span is the parent of the whole saga.
        let traceparent = messaging::current_traceparent_or(transaction_id);
        let pending = Transaction::pending(transaction_id, &new, now);
        let response = to_proto(&pending);
        // First use of the key (nearly every request): one statement.
        let fresh = self
            .store
            .create_fresh(
                request.idempotency_key,
                &request.fingerprint,
                &pending,
                &response,
                messages::requested_event(&pending, now).with_traceparent(traceparent.clone()),
            )
            .await?;
        let created = if fresh {
            tracing::debug!(%transaction_id, kind = pending.kind.as_str(), "transaction requested");
            response
        } else {
            // The key is held: replayed, refused or in use, as it says (or,
            // if it expired meanwhile, claimed and stored afresh).
            self.store
                .idempotent(
                    Some(request.idempotency_key),
                    &request.fingerprint,
                    now,
                    move |conn| {
                        Box::pin(async move {
                            let transaction =
                                store::insert(conn, transaction_id, &new, now).await?;
                            let event = messages::requested_event(&transaction, now)
                                .with_traceparent(traceparent);
                            messaging::enqueue(conn, event).await?;
                            Ok(to_proto(&transaction))
                        })
                    },
                )
                .await?
        };

        let Some(subscription) = subscription.filter(|_| !is_terminal(&created)) else {
            return Ok(created);
        };
        let deadline = tokio::time::Instant::now() + wait;
        // A replayed answer names the transaction the key's first request
        // created: that one is read first.
        let fresh = created.transaction_id == transaction_id.to_string();
        let subscription = if fresh {
            subscription
        } else {
            let replayed = Uuid::parse_str(&created.transaction_id).map_err(ApiError::internal)?;
            self.hub.subscribe(replayed)
        };
        let latest =
            watch::wait_for_terminal(&self.store, subscription, deadline, fresh, &self.shutdown)
                .await?;
        let latest = latest
            .map(|transaction| to_proto(&transaction))
            .unwrap_or(created);
        tracing::debug!(operation = request.operation, transaction_id = %latest.transaction_id, status = latest.status().as_str_name(), "wait ended");
        Ok(latest)
    }
}

fn parse_key(text: &str) -> Result<String, &'static str> {
    corebank_platform::idempotency::parse_key(text)
}

fn parse_id(field: &str, text: &str) -> Result<Uuid, ApiError> {
    domain::parse_account_id(text).map_err(|why| ApiError::invalid_field(field, why))
}

/// The stream WatchTransaction answers with.
pub type TransactionStream =
    Pin<Box<dyn Stream<Item = Result<pb::Transaction, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TransactionService for TransactionApi {
    type WatchTransactionStream = TransactionStream;

    #[tracing::instrument(skip_all)]
    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let caller_timeout = caller_timeout(request.metadata());
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        // The key and the wait do not change what is asked for; who asks does.
        let fingerprint = fingerprint(
            &tenancy.scoped("CreateTransfer"),
            &pb::CreateTransferRequest {
                idempotency_key: String::new(),
                wait: None,
                ..request.clone()
            },
        );
        let created = self
            .create(CreateRequest {
                operation: "CreateTransfer",
                tenancy,
                idempotency_key: &request.idempotency_key,
                input: NewTransactionInput {
                    kind: TransactionKind::Transfer,
                    source: Some(("source_account_id", &request.source_account_id)),
                    destination: Some(("destination_account_id", &request.destination_account_id)),
                    amount: money_input(request.amount.as_ref()),
                    description: &request.description,
                },
                wait: request.wait.as_ref(),
                fingerprint,
                caller_timeout,
            })
            .await?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn create_deposit(
        &self,
        request: Request<pb::CreateDepositRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let caller_timeout = caller_timeout(request.metadata());
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        // The key and the wait do not change what is asked for; who asks does.
        let fingerprint = fingerprint(
            &tenancy.scoped("CreateDeposit"),
            &pb::CreateDepositRequest {
                idempotency_key: String::new(),
                wait: None,
                ..request.clone()
            },
        );
        let created = self
            .create(CreateRequest {
                operation: "CreateDeposit",
                tenancy,
                idempotency_key: &request.idempotency_key,
                input: NewTransactionInput {
                    kind: TransactionKind::Deposit,
                    source: None,
                    destination: Some(("account_id", &request.account_id)),
                    amount: money_input(request.amount.as_ref()),
                    description: &request.description,
                },
                wait: request.wait.as_ref(),
                fingerprint,
                caller_timeout,
            })
            .await?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn create_withdrawal(
        &self,
        request: Request<pb::CreateWithdrawalRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let caller_timeout = caller_timeout(request.metadata());
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        // The key and the wait do not change what is asked for; who asks does.
        let fingerprint = fingerprint(
            &tenancy.scoped("CreateWithdrawal"),
            &pb::CreateWithdrawalRequest {
                idempotency_key: String::new(),
                wait: None,
                ..request.clone()
            },
        );
        let created = self
            .create(CreateRequest {
                operation: "CreateWithdrawal",
                tenancy,
                idempotency_key: &request.idempotency_key,
                input: NewTransactionInput {
                    kind: TransactionKind::Withdrawal,
                    source: Some(("account_id", &request.account_id)),
                    destination: None,
                    amount: money_input(request.amount.as_ref()),
                    description: &request.description,
                },
                wait: request.wait.as_ref(),
                fingerprint,
                caller_timeout,
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let transaction_id = parse_id("transaction_id", &request.get_ref().transaction_id)?;
        let transaction = self.store.get(transaction_id).await?;
        self.check_reach(&tenancy, &transaction).await?;
        Ok(Response::new(to_proto(&transaction)))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let account_id =
            violations.take("account_id", domain::parse_account_id(&request.account_id));
        let status = violations.take(
            "status",
            pb::TransactionStatus::try_from(request.status)
                .map_err(|_| "is not a known transaction status"),
        );
        let start_time = request.start_time.as_ref().and_then(|time| {
            violations.take(
                "start_time",
                from_timestamp(time).ok_or("is not a valid timestamp"),
            )
        });
        let end_time = request.end_time.as_ref().and_then(|time| {
            violations.take(
                "end_time",
                from_timestamp(time).ok_or("is not a valid timestamp"),
            )
        });
        if let (Some(start), Some(end)) = (start_time, end_time) {
            violations.check(start < end, "end_time", "must be after start_time");
        }
        violations.check(request.page_size >= 0, "page_size", "must not be negative");
        violations.into_result()?;
        let Some(account_id) = account_id else {
            return Err(ApiError::invalid_field("account_id", "must be a UUID").into());
        };
        if !self.accounts.reaches(&tenancy, account_id).await? {
            return Err(ApiError::not_found(
                "ACCOUNT_NOT_FOUND",
                format!("account {account_id} not found"),
            )
            .into());
        }
        let filter = ListFilter {
            account_id,
            status: status.and_then(status_from_proto),
            start_time,
            end_time,
        };
        let summary = filter.summary();
        let page = Page::parse(request.page_size, &request.page_token, &summary)?;
        let mut transactions = self.store.list(&filter, &page).await?;
        let next_page_token = page.finish(&mut transactions, store::cursor, &summary);
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: transactions.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn watch_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<Self::WatchTransactionStream>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let transaction_id = parse_id("transaction_id", &request.get_ref().transaction_id)?;
        if tenancy != Tenancy::All {
            let transaction = self.store.get(transaction_id).await?;
            self.check_reach(&tenancy, &transaction).await?;
        }
        let changes = watch::follow(
            self.store.clone(),
            &self.hub,
            transaction_id,
            self.shutdown.clone(),
        )
        .await?;
        let stream = changes.map(|item| {
            item.map(|transaction| to_proto(&transaction))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
