//! A service describes itself once: its name, schema, queues, default
//! address, the services it calls, its flags, and how it is built and run
//! from a common [`Context`]. `corebank up`, `migrate`, `serve` and the test
//! harness iterate over one list of these descriptors instead of naming every
//! service, so adding a service is one entry in that list.
//!
//! A service crate implements [`Service`] on a unit struct; the list holds
//! them as [`AnyService`] trait objects, which erase the types of the flags
//! and settings so services of different shapes sit in one slice.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::ServiceAuth;
use crate::clock::SharedClock;
use crate::config::RequestArgs;
use crate::db::SchemaSpec;
use crate::messaging::{Broker, QueueSpec};

/// What every service is built from, whoever runs it (`corebank up`,
/// `corebank serve` or the test harness).
#[derive(Debug, Clone)]
pub struct Context {
    /// A pool logged in as the service's own role, on its own schema.
    pub pool: PgPool,
    pub clock: SharedClock,
    pub requests: RequestArgs,
    /// A broker handle named after the service.
    pub broker: Broker,
    /// Where the services it calls listen, when the runner knows (the test
    /// harness binds free ports); otherwise the service's own endpoint flags
    /// decide.
    pub peers: Peers,
    /// Who the service trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
}

/// Where running services listen, by name.
#[derive(Debug, Clone, Default)]
pub struct Peers(HashMap<&'static str, SocketAddr>);

impl Peers {
    pub fn insert(&mut self, name: &'static str, addr: SocketAddr) {
        self.0.insert(name, addr);
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.0.get(name).copied()
    }
}

impl Context {
    /// The gRPC endpoint of the peer `name` when the runner knows where it
    /// listens: `https://` when this service's client TLS is configured
    /// (tonic applies TLS by the scheme), `http://` otherwise.
    pub fn peer_endpoint(&self, name: &str) -> Option<String> {
        let scheme = if self.auth.credentials.tls().is_some() {
            "https"
        } else {
            "http"
        };
        self.peers
            .addr(name)
            .map(|addr| format!("{scheme}://{addr}"))
    }
}

impl FromIterator<(&'static str, SocketAddr)> for Peers {
    fn from_iter<I: IntoIterator<Item = (&'static str, SocketAddr)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// A service bound to its address, not serving yet.
pub struct Bound {
    pub local_addr: SocketAddr,
    /// Serves until the shutdown token given to [`Service::start`] is cancelled.
    pub run: BoxFuture<'static, anyhow::Result<()>>,
}

impl Bound {
    pub fn new<F>(local_addr: SocketAddr, run: F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            local_addr,
            run: run.boxed(),
        }
    }
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// A service's description, implemented once in its own crate.
pub trait Service: Send + Sync + 'static {
    /// `corebank serve <NAME>`; also names its broker connection, and its
    /// listen flag is `--<NAME>-addr`.
    const NAME: &'static str;
    /// What it owns in PostgreSQL.
    const SCHEMA: SchemaSpec;
    /// Where it listens unless told otherwise (the default of `--<NAME>-addr`).
    const DEFAULT_ADDR: &'static str;
    /// The services it calls, by name: they start before it.
    const CALLS: &'static [&'static str] = &[];

    /// Its own flags, flattened into `corebank up` and `corebank serve`.
    type Args: clap::Args + fmt::Debug + Send + Sync + 'static;
    /// What its `Application::build` takes.
    type Settings: Send + 'static;

    /// The queues it consumes: declared at migration time, with the schemas,
    /// so no event is unroutable because its consumer has not started yet.
    fn queues() -> Vec<QueueSpec> {
        Vec::new()
    }

    /// The listen address its flags give.
    fn listen_addr(args: &Self::Args) -> SocketAddr;

    /// Its settings, from the common context and its own flags (which may
    /// name files to read, hence the error).
    fn settings(context: Context, args: &Self::Args) -> anyhow::Result<Self::Settings>;

    /// Binds `addr` (port 0 picks a free port); the returned future serves
    /// until `shutdown` is cancelled.
    fn start(
        settings: Self::Settings,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Bound>> + Send;
}

/// One service's parsed flags, their type erased.
#[derive(Debug)]
pub struct ErasedArgs(Box<dyn AnyArgs>);

trait AnyArgs: Any + fmt::Debug + Send + Sync {}

impl<T: Any + fmt::Debug + Send + Sync> AnyArgs for T {}

/// A [`Service`] as the list holds it: the same description, its flags and
/// settings passed type-erased.
pub trait AnyService: Send + Sync {
    fn name(&self) -> &'static str;
    fn schema(&self) -> SchemaSpec;
    fn default_addr(&self) -> &'static str;
    fn calls(&self) -> &'static [&'static str];
    fn queues(&self) -> Vec<QueueSpec>;
    /// Adds its flags to `command`.
    fn augment_args(&self, command: clap::Command) -> clap::Command;
    /// Reads its flags from a command line parsed with them.
    fn args_from_matches(&self, matches: &clap::ArgMatches) -> Result<ErasedArgs, clap::Error>;
    /// Its flags from a command line of its own flags only (no binary name);
    /// an empty one gives the defaults and the environment variables, as
    /// `corebank up` would read them.
    fn parse_args(&self, command_line: &[&str]) -> Result<ErasedArgs, clap::Error>;
    /// The listen address its flags give.
    fn listen_addr(&self, args: &ErasedArgs) -> anyhow::Result<SocketAddr>;
    /// Its settings (its crate's `Settings`), from the common context and its
    /// own flags; a runner may adjust them before `start`.
    fn settings(&self, context: Context, args: &ErasedArgs) -> anyhow::Result<Box<dyn Any + Send>>;
    /// Binds `addr`; the returned future serves until `shutdown` is cancelled.
    fn start(
        &self,
        settings: Box<dyn Any + Send>,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<Bound>>;
}

impl fmt::Debug for dyn AnyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Service").field(&self.name()).finish()
    }
}

impl<S: Service> AnyService for S {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn schema(&self) -> SchemaSpec {
        S::SCHEMA
    }

    fn default_addr(&self) -> &'static str {
        S::DEFAULT_ADDR
    }

    fn calls(&self) -> &'static [&'static str] {
        S::CALLS
    }

    fn queues(&self) -> Vec<QueueSpec> {
        S::queues()
    }

    fn augment_args(&self, command: clap::Command) -> clap::Command {
        <S::Args as clap::Args>::augment_args(command)
    }

    fn args_from_matches(&self, matches: &clap::ArgMatches) -> Result<ErasedArgs, clap::Error> {
        let args = <S::Args as clap::FromArgMatches>::from_arg_matches(matches)?;
        Ok(ErasedArgs(Box::new(args)))
    }

    fn parse_args(&self, command_line: &[&str]) -> Result<ErasedArgs, clap::Error> {
        let command = self.augment_args(clap::Command::new(S::NAME).no_binary_name(true));
        let matches = command.try_get_matches_from(command_line)?;
        self.args_from_matches(&matches)
    }

    fn listen_addr(&self, args: &ErasedArgs) -> anyhow::Result<SocketAddr> {
        Ok(S::listen_addr(downcast_args::<S>(args)?))
    }

    fn settings(&self, context: Context, args: &ErasedArgs) -> anyhow::Result<Box<dyn Any + Send>> {
        let args = downcast_args::<S>(args)?;
        Ok(Box::new(S::settings(context, args)?))
    }

    fn start(
        &self,
        settings: Box<dyn Any + Send>,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<Bound>> {
        match settings.downcast::<S::Settings>() {
            Ok(settings) => S::start(*settings, addr, shutdown).boxed(),
            Err(_) => {
                let error = anyhow::anyhow!("{}: settings of another service", S::NAME);
                futures::future::ready(Err(error)).boxed()
            }
        }
    }
}

fn downcast_args<S: Service>(args: &ErasedArgs) -> anyhow::Result<&S::Args> {
    let any: &dyn Any = &*args.0;
    any.downcast_ref::<S::Args>()
        .ok_or_else(|| anyhow::anyhow!("{}: flags of another service", S::NAME))
}
