//! Generating the load: opening and funding accounts, sending transfers in a
//! closed or open loop, following each to its end, and tallying outcomes.

use super::*;

/// A create call in flight, whichever movement it starts.
type CreateCall = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<tonic::Response<pb::Transaction>, tonic::Status>>
            + Send,
    >,
>;

pub(super) fn usd(amount: String) -> Option<pb::Money> {
    Some(pb::Money {
        currency: CURRENCY.to_owned(),
        amount,
    })
}

pub(super) fn wait() -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: SERVER_WAIT.as_secs() as i64,
        nanos: 0,
    })
}

pub(super) fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(super) fn progress(message: &str) {
    crate::output::note(&format!("bench: {message}\n"));
}

/// The `ErrorInfo` reason of a refusal, or its code when it has none.
pub(super) fn reason_of(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_else(|| format!("{:?}", status.code()))
}

pub(super) fn describe(rpc: &str, status: &tonic::Status) -> String {
    format!(
        "{rpc}: {:?} {} ({})",
        status.code(),
        status.message(),
        reason_of(status)
    )
}

pub(super) fn is_terminal(transaction: &pb::Transaction) -> bool {
    matches!(
        transaction.status(),
        pb::TransactionStatus::Completed | pb::TransactionStatus::Failed
    )
}

pub(super) enum Followed {
    Terminal(Box<pb::Transaction>),
    Deadline,
    Rpc(String),
}

/// Follows a transaction to its terminal status: the stream of status
/// changes when the service offers it, polling otherwise.
pub(super) async fn follow(
    client: &mut TransactionServiceClient<AuthedChannel>,
    current: pb::Transaction,
    deadline: Instant,
) -> Followed {
    if is_terminal(&current) {
        return Followed::Terminal(Box::new(current));
    }
    let transaction_id = current.transaction_id.clone();
    let request = || pb::GetTransactionRequest {
        transaction_id: transaction_id.clone(),
    };
    match timeout_at(deadline, client.watch_transaction(request())).await {
        Err(_) => return Followed::Deadline,
        Ok(Err(status)) if status.code() == Code::Unimplemented => {}
        Ok(Err(status)) => return Followed::Rpc(describe("WatchTransaction", &status)),
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            loop {
                match timeout_at(deadline, stream.message()).await {
                    Err(_) => return Followed::Deadline,
                    Ok(Err(status)) => return Followed::Rpc(describe("WatchTransaction", &status)),
                    // The stream ended early: poll for the rest.
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(update))) if is_terminal(&update) => {
                        return Followed::Terminal(Box::new(update));
                    }
                    Ok(Ok(Some(_))) => {}
                }
            }
        }
    }
    let mut pause = Duration::from_millis(2);
    loop {
        if Instant::now() + pause >= deadline {
            return Followed::Deadline;
        }
        sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
        match timeout_at(deadline, client.get_transaction(request())).await {
            Err(_) => return Followed::Deadline,
            Ok(Err(status)) => return Followed::Rpc(describe("GetTransaction", &status)),
            Ok(Ok(response)) if is_terminal(response.get_ref()) => {
                return Followed::Terminal(Box::new(response.into_inner()));
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Registers and verifies a customer, opens a USD checking account and funds it.
pub(super) async fn open_funded_account(
    mut clients: Clients,
    run_id: &str,
    index: u32,
    funding: &str,
    deadline: Instant,
) -> anyhow::Result<String> {
    let customer = clients
        .customers
        .create_customer(pb::CreateCustomerRequest {
            idempotency_key: key(),
            legal_name: format!("Bench Customer {index}"),
            email: format!("bench-{run_id}-{index}@example.com"),
            phone: String::new(),
            date_of_birth: "1990-01-01".to_owned(),
            country: "DE".to_owned(),
            national_id: format!("BENCH-{run_id}-{index}"),
        })
        .await
        .context("CreateCustomer")?
        .into_inner();
    clients
        .customers
        .verify_customer(pb::KycTransitionRequest {
            customer_id: customer.customer_id.clone(),
            idempotency_key: key(),
            actor: "corebank-bench".to_owned(),
            reason: "benchmark customer".to_owned(),
        })
        .await
        .context("VerifyCustomer")?;
    let account = clients
        .accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: key(),
            customer_id: customer.customer_id,
            currency: CURRENCY.to_owned(),
            product: pb::AccountProduct::Checking as i32,
            overdraft_limit: String::new(),
        })
        .await
        .context("OpenAccount")?
        .into_inner();
    let mut transactions = clients.transactions(index as usize);
    let deposit = transactions
        .create_deposit(pb::CreateDepositRequest {
            idempotency_key: key(),
            account_id: account.account_id.clone(),
            amount: usd(funding.to_owned()),
            description: "corebank bench funding".to_owned(),
            wait: wait(),
        })
        .await
        .context("CreateDeposit")?
        .into_inner();
    match follow(&mut transactions, deposit, deadline).await {
        Followed::Terminal(done) if done.status() == pb::TransactionStatus::Completed => {
            Ok(account.account_id)
        }
        Followed::Terminal(failed) => anyhow::bail!(
            "the funding deposit {} failed: {} {}",
            failed.transaction_id,
            failed.failure_reason,
            failed.failure_detail
        ),
        Followed::Deadline => {
            anyhow::bail!("the funding deposit did not finish before the deadline")
        }
        Followed::Rpc(error) => anyhow::bail!("following the funding deposit: {error}"),
    }
}

/// Opens and funds `--accounts` accounts, a step of `bar` each.
pub(super) async fn setup(
    clients: &Clients,
    args: &BenchArgs,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<String>> {
    let run_id = format!("{:08x}", rand::rng().random::<u32>());
    let run_id = &run_id;
    futures::stream::iter(0..args.accounts)
        .map(|index| async move {
            let funded =
                open_funded_account(clients.clone(), run_id, index, &args.funding, deadline).await;
            bar.inc(1);
            funded
        })
        .buffered(SETUP_PARALLELISM)
        .try_collect()
        .await
}

pub(super) enum Outcome {
    Completed {
        id: String,
        finished: Instant,
    },
    Failed {
        id: Option<String>,
        finished: Instant,
        reason: String,
    },
    Error {
        id: Option<String>,
        message: String,
    },
    Unfinished {
        id: Option<String>,
    },
}

/// Starts one planned movement (transfer, deposit or withdrawal) and follows
/// it to its end, noting when that end was seen.
pub(super) async fn transfer(
    mut client: TransactionServiceClient<AuthedChannel>,
    accounts: &[String],
    planned: Planned,
    deadline: Instant,
) -> Outcome {
    let (idempotency_key, description) = (key(), "corebank bench".to_owned());
    let amount = usd(format!(
        "{}.{:02}",
        planned.cents / 100,
        planned.cents % 100
    ));
    let (source, destination) = (
        accounts[planned.source].clone(),
        accounts[planned.destination].clone(),
    );
    let (rpc, call) = match planned.kind {
        Kind::Transfer => ("CreateTransfer", {
            let request = pb::CreateTransferRequest {
                idempotency_key,
                source_account_id: source,
                destination_account_id: destination,
                amount,
                description,
                wait: wait(),
            };
            let mut client = client.clone();
            Box::pin(async move { client.create_transfer(request).await }) as CreateCall
        }),
        Kind::Deposit => ("CreateDeposit", {
            let request = pb::CreateDepositRequest {
                idempotency_key,
                account_id: destination,
                amount,
                description,
                wait: wait(),
            };
            let mut client = client.clone();
            Box::pin(async move { client.create_deposit(request).await }) as CreateCall
        }),
        Kind::Withdrawal => ("CreateWithdrawal", {
            let request = pb::CreateWithdrawalRequest {
                idempotency_key,
                account_id: source,
                amount,
                description,
                wait: wait(),
            };
            let mut client = client.clone();
            Box::pin(async move { client.create_withdrawal(request).await }) as CreateCall
        }),
    };
    let created = match timeout_at(deadline, call).await {
        Err(_) => return Outcome::Unfinished { id: None },
        // Refused up front (a business rule): a terminal outcome like a failed saga.
        Ok(Err(status)) if status.code() == Code::FailedPrecondition => {
            return Outcome::Failed {
                id: None,
                finished: Instant::now(),
                reason: reason_of(&status),
            };
        }
        Ok(Err(status)) => {
            return Outcome::Error {
                id: None,
                message: describe(rpc, &status),
            };
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    let id = Some(created.transaction_id.clone());
    match follow(&mut client, created, deadline).await {
        Followed::Terminal(done) if done.status() == pb::TransactionStatus::Completed => {
            Outcome::Completed {
                id: done.transaction_id,
                finished: Instant::now(),
            }
        }
        Followed::Terminal(failed) => Outcome::Failed {
            finished: Instant::now(),
            id,
            reason: failed.failure_reason,
        },
        Followed::Deadline => Outcome::Unfinished { id },
        Followed::Rpc(message) => Outcome::Error { id, message },
    }
}

/// What a set of transfers came to.
pub(super) struct Tally {
    pub(super) latency_us: Histogram<u64>,
    pub(super) started: u64,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) errors: u64,
    pub(super) unfinished: u64,
    pub(super) failure_reasons: BTreeMap<String, u64>,
    pub(super) error_samples: Vec<String>,
    pub(super) ids: Vec<String>,
    pub(super) last_terminal: Option<Instant>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            // One microsecond to one hour, three significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            started: 0,
            completed: 0,
            failed: 0,
            errors: 0,
            unfinished: 0,
            failure_reasons: BTreeMap::new(),
            error_samples: Vec::new(),
            ids: Vec::new(),
            last_terminal: None,
        }
    }

    pub(super) fn terminal(&mut self, intended: Instant, finished: Instant) {
        let latency = finished.duration_since(intended);
        self.latency_us
            .saturating_record(latency.as_micros().try_into().unwrap_or(u64::MAX));
        self.last_terminal = self.last_terminal.max(Some(finished));
    }

    /// Counts one transfer meant to be sent at `intended`.
    pub(super) fn add(&mut self, intended: Instant, outcome: Outcome) {
        self.started += 1;
        match outcome {
            Outcome::Completed { id, finished } => {
                self.completed += 1;
                self.ids.push(id);
                self.terminal(intended, finished);
            }
            Outcome::Failed {
                id,
                finished,
                reason,
            } => {
                self.failed += 1;
                self.ids.extend(id);
                *self.failure_reasons.entry(reason).or_default() += 1;
                self.terminal(intended, finished);
            }
            Outcome::Error { id, message } => {
                self.errors += 1;
                self.ids.extend(id);
                if self.error_samples.len() < ERROR_SAMPLES
                    && !self.error_samples.contains(&message)
                {
                    self.error_samples.push(message);
                }
            }
            Outcome::Unfinished { id } => {
                self.unfinished += 1;
                self.ids.extend(id);
            }
        }
    }

    pub(super) fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds");
        self.started += other.started;
        self.completed += other.completed;
        self.failed += other.failed;
        self.errors += other.errors;
        self.unfinished += other.unfinished;
        for (reason, count) in other.failure_reasons {
            *self.failure_reasons.entry(reason).or_default() += count;
        }
        for message in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
                self.error_samples.push(message);
            }
        }
        self.ids.extend(other.ids);
        self.last_terminal = self.last_terminal.max(other.last_terminal);
    }
}

/// `concurrency` workers, each sending its next transfer when the last one
/// is terminal; a step of `bar` for each transfer that ends.
pub(super) async fn closed_loop(
    clients: &Clients,
    accounts: Arc<Vec<String>>,
    plan: Arc<Vec<Planned>>,
    concurrency: u32,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for worker in 0..concurrency as usize {
        let client = clients.transactions(worker);
        let (accounts, plan, next) = (accounts.clone(), plan.clone(), next.clone());
        let bar = bar.clone();
        workers.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.len() || Instant::now() >= deadline {
                    return tally;
                }
                let sent = Instant::now();
                let outcome = transfer(client.clone(), &accounts, plan[index], deadline).await;
                tally.add(sent, outcome);
                bar.inc(1);
            }
        });
    }
    let mut total = Tally::new();
    while let Some(worker) = workers.join_next().await {
        total.merge(worker.context("a bench worker panicked")?);
    }
    Ok(total)
}

/// Transfer `i` goes out at `start + i / rate`, whether or not earlier ones
/// have answered; its latency counts from that intended time. A step of
/// `bar` for each transfer that ends.
pub(super) async fn open_loop(
    clients: &Clients,
    accounts: Arc<Vec<String>>,
    plan: &[Planned],
    rate: f64,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    let mut total = Tally::new();
    for (index, planned) in plan.iter().copied().enumerate() {
        let intended = start + Duration::from_secs_f64(index as f64 / rate);
        if intended >= deadline {
            break;
        }
        sleep_until(intended).await;
        let (client, accounts) = (clients.transactions(index), accounts.clone());
        in_flight.spawn(async move {
            (
                intended,
                transfer(client, &accounts, planned, deadline).await,
            )
        });
        while let Some(done) = in_flight.try_join_next() {
            let (intended, outcome) = done.context("a bench transfer panicked")?;
            total.add(intended, outcome);
            bar.inc(1);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        let (intended, outcome) = done.context("a bench transfer panicked")?;
        total.add(intended, outcome);
        bar.inc(1);
    }
    Ok(total)
}
