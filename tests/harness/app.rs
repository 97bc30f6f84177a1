//! `TestApp`: every service on free ports against one fresh database and
//! namespace, with clients and stop/start for fault tests. What tests build
//! on it (customers, accounts, sagas, invariants) is in `fixtures.rs`.

use super::*;

/// A service's stop token and the task running it.
type Running = (CancellationToken, JoinHandle<anyhow::Result<()>>);

/// A service a test can stop and start again: a name from the one list
/// (`corebank_cli::services::SERVICES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Service(&'static str);

// Spelled like the enum variants the tests have always used.
#[allow(non_upper_case_globals)]
impl Service {
    pub const Customer: Service = Service(corebank_customer::CustomerService::NAME);
    pub const Account: Service = Service(corebank_account::AccountService::NAME);
    pub const Transaction: Service = Service(corebank_transaction::TransactionService::NAME);
    pub const Orchestrator: Service = Service(corebank_orchestrator::OrchestratorService::NAME);
    pub const Fraud: Service = Service(corebank_fraud::FraudService::NAME);
    pub const Reporting: Service = Service(corebank_reporting::ReportingService::NAME);

    /// Any service of the list, by name.
    pub fn named(name: &str) -> Service {
        let service = services::find(name).unwrap_or_else(|| panic!("no service named {name}"));
        Service(service.name())
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    fn descriptor(self) -> &'static dyn AnyService {
        services::find(self.0).unwrap_or_else(|| panic!("no service named {}", self.0))
    }
}

/// How a service runs under test where it differs from `corebank up`: a
/// pool sized for the suite, and the test's manual clock unless its timers
/// must fire on their own. A service not named here gets the defaults.
#[derive(Debug, Clone, Copy)]
struct UnderTest {
    pool_size: u32,
    manual_clock: bool,
}

impl UnderTest {
    fn of(service: Service) -> UnderTest {
        // Four tests run at once against one PostgreSQL that allows 100
        // connections, and a pool keeps what it opened: these sizes (and
        // the owner pool) keep four tests under that together.
        let pool_size = match service {
            Service::Account => 8,
            Service::Transaction | Service::Orchestrator => 4,
            Service::Customer | Service::Fraud => 3,
            Service::Reporting => 2,
            _ => 3,
        };
        // The saga timers must fire, so the orchestrator keeps real time.
        let manual_clock = service != Service::Orchestrator;
        UnderTest {
            pool_size,
            manual_clock,
        }
    }
}

/// Saga timings short enough for tests: a silent participant is noticed
/// within about a second, and given about eight before a step before the
/// pivot gives up (four services share two cores during a test run).
pub fn test_engine() -> EngineConfig {
    EngineConfig {
        step_timeout: Duration::from_millis(1000),
        backoff_base: Duration::from_millis(200),
        backoff_cap: Duration::from_millis(1500),
        max_attempts: 5,
        tick: Duration::from_millis(100),
        ..EngineConfig::default()
    }
}

/// Every service running on free ports against one fresh database and one
/// fresh broker namespace.
#[derive(Debug)]
pub struct TestApp {
    pub db: TestDb,
    pub owner: PgPool,
    pub customer: CustomerServiceClient<AuthedChannel>,
    pub account: AccountServiceClient<AuthedChannel>,
    pub transaction: TransactionServiceClient<AuthedChannel>,
    pub sagas: SagaAdminServiceClient<AuthedChannel>,
    pub fraud: FraudServiceClient<AuthedChannel>,
    pub reporting: ReportingServiceClient<AuthedChannel>,
    pub customer_addr: SocketAddr,
    pub account_addr: SocketAddr,
    pub transaction_addr: SocketAddr,
    pub orchestrator_addr: SocketAddr,
    pub fraud_addr: SocketAddr,
    pub reporting_addr: SocketAddr,
    /// Drives account holds and timestamps; the orchestrator keeps real time
    /// so its timers fire.
    pub clock: Arc<ManualClock>,
    pub namespace: Namespace,
    /// Holds `namespace` for this app alone until it is dropped.
    _namespace_lease: NamespaceLease,
    pub requests: RequestArgs,
    pub engine: EngineConfig,
    /// The fraud service's default review deadline.
    pub review_deadline: Duration,
    /// The key the reporting service signs exports with.
    pub signing_key: corebank_reporting::domain::export::SigningKey,
    pub shutdown: CancellationToken,
    /// Signs every token of this app; every service trusts it alone.
    pub auth_key: DevKey,
    /// What `customer`, `account`, … present: an operator token with every
    /// staff and partner scope.
    pub credentials: Credentials,
    /// Where each service of the list listens.
    peers: Peers,
    running: Mutex<HashMap<Service, Running>>,
    /// The ports of stopped services, held so that no other test's service
    /// binding port 0 is given one before the service starts again on it.
    reserved: Mutex<HashMap<Service, tokio::net::TcpListener>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(RequestArgs::default(), test_engine()).await
    }

    pub async fn spawn_with(requests: RequestArgs, engine: EngineConfig) -> TestApp {
        let db = TestDb::create(&services::schemas()).await;
        // Like migrations for the schema: the whole topology exists before any
        // service publishes, so no event is unroutable for want of a queue.
        let namespace_lease = lease_namespace().await;
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
        let auth_key = DevKey::generate().expect("a token signing key");
        let credentials = operator_credentials(&auth_key);
        let lazy_channel = |addr| lazy_channel(addr, &credentials);
        let mut app = TestApp {
            owner: db.owner.clone(),
            db,
            customer: CustomerServiceClient::new(lazy_channel(loopback)),
            account: AccountServiceClient::new(lazy_channel(loopback)),
            transaction: TransactionServiceClient::new(lazy_channel(loopback)),
            sagas: SagaAdminServiceClient::new(lazy_channel(loopback)),
            fraud: FraudServiceClient::new(lazy_channel(loopback)),
            reporting: ReportingServiceClient::new(lazy_channel(loopback)),
            customer_addr: loopback,
            account_addr: loopback,
            transaction_addr: loopback,
            orchestrator_addr: loopback,
            fraud_addr: loopback,
            reporting_addr: loopback,
            clock: ManualClock::new(Utc::now()),
            namespace: namespace_lease.namespace().clone(),
            _namespace_lease: namespace_lease,
            requests,
            engine,
            review_deadline: Duration::from_secs(24 * 3600),
            signing_key: corebank_reporting::domain::export::generate_signing_key()
                .expect("a signing key"),
            shutdown: CancellationToken::new(),
            auth_key: auth_key.clone(),
            credentials: credentials.clone(),
            peers: Peers::default(),
            running: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
        };
        // Callees first, so each service is handed where its callees listen.
        for descriptor in SERVICES {
            let service = Service(descriptor.name());
            let bound = app.start_at(service, loopback).await;
            app.peers.insert(service.name(), bound);
        }
        app.customer_addr = app.addr_of(Service::Customer);
        app.account_addr = app.addr_of(Service::Account);
        app.transaction_addr = app.addr_of(Service::Transaction);
        app.fraud_addr = app.addr_of(Service::Fraud);
        app.orchestrator_addr = app.addr_of(Service::Orchestrator);
        app.reporting_addr = app.addr_of(Service::Reporting);
        let clients = app.clients(&credentials).await;
        app.customer = clients.customer;
        app.account = clients.account;
        app.transaction = clients.transaction;
        app.sagas = clients.sagas;
        app.fraud = clients.fraud;
        app.reporting = clients.reporting;
        app
    }

    /// Where a service listens (and listens again after a restart).
    pub fn addr_of(&self, service: Service) -> SocketAddr {
        self.peers
            .addr(service.name())
            .unwrap_or_else(|| panic!("{} is not running", service.name()))
    }

    /// Stops one service as SIGTERM would, and waits until it has drained.
    pub async fn stop(&self, service: Service) {
        let running = self
            .running
            .lock()
            .expect("running services")
            .remove(&service);
        if let Some((token, task)) = running {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
            match hold_port(self.addr_of(service)) {
                Ok(placeholder) => {
                    self.reserved
                        .lock()
                        .expect("reserved ports")
                        .insert(service, placeholder);
                }
                Err(error) => eprintln!("{} port not held while stopped: {error}", service.name()),
            }
        }
    }

    /// Starts a stopped service again on its old address.
    pub async fn start(&self, service: Service) {
        // Dropped just before the service binds the port again.
        drop(
            self.reserved
                .lock()
                .expect("reserved ports")
                .remove(&service),
        );
        self.start_at(service, self.addr_of(service)).await;
    }

    async fn start_at(&self, service: Service, addr: SocketAddr) -> SocketAddr {
        let descriptor = service.descriptor();
        let name = descriptor.name();
        let under_test = UnderTest::of(service);
        let clock: SharedClock = if under_test.manual_clock {
            self.clock.clone()
        } else {
            corebank_platform::clock::system()
        };
        let context = Context {
            pool: self
                .db
                .service_pool(&descriptor.schema(), under_test.pool_size)
                .await,
            clock,
            requests: self.requests.clone(),
            broker: broker(&self.namespace, name),
            peers: self.peers.clone(),
            auth: ServiceAuth::development(&self.auth_key, name),
        };
        let args = descriptor
            .parse_args(&[])
            .unwrap_or_else(|error| panic!("{name} flags: {error}"));
        let mut settings = descriptor
            .settings(context, &args)
            .unwrap_or_else(|error| panic!("{name} settings: {error:#}"));
        self.adjust(settings.as_mut());
        let token = self.shutdown.child_token();
        let bound = descriptor
            .start(settings, addr, token.clone())
            .await
            .unwrap_or_else(|error| panic!("build {name} service: {error:#}"));
        let task = tokio::spawn(bound.run);
        self.running
            .lock()
            .expect("running services")
            .insert(service, (token, task));
        bound.local_addr
    }

    /// The test's own settings where a service's flags would set them.
    fn adjust(&self, settings: &mut (dyn Any + Send)) {
        if let Some(orchestrator) = settings.downcast_mut::<corebank_orchestrator::Settings>() {
            orchestrator.engine = self.engine.clone();
        }
        if let Some(gateway) = settings.downcast_mut::<corebank_gateway::Settings>() {
            // Trust the test's key and sign the gateway's delegate token with it.
            gateway.use_development_key(&self.auth_key);
        }
        if let Some(fraud) = settings.downcast_mut::<corebank_fraud::Settings>() {
            fraud.review_deadline = self.review_deadline;
        }
        if let Some(reporting) = settings.downcast_mut::<corebank_reporting::Settings>() {
            // A key of the test's own, not the user's development key; and
            // reconciliation only when a test asks for it.
            reporting.signing_key = corebank_reporting::KeySource::Key(self.signing_key.clone());
            reporting.reconcile_every = Duration::ZERO;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The lease ends with the app; the next lessee waits for these
        // services' consumers to go and empties the queues.
        self.shutdown.cancel();
    }
}

fn lazy_channel(addr: SocketAddr, credentials: &Credentials) -> AuthedChannel {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    credentials.connect_lazy(endpoint).expect("channel")
}

/// Listens on `addr` (with SO_REUSEADDR, as the services bind, so the
/// stopped service's connections in TIME_WAIT do not stand in the way).
fn hold_port(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1)
}
