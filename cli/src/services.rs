//! Every corebank service, once, in start order: callees first (the account
//! service calls the customer service). `corebank up`, `migrate` and `serve`
//! and the test harness iterate over [`SERVICES`]; adding a service is one
//! line here, plus its [`Service`](corebank_platform::service::Service) impl
//! in its own crate.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use corebank_platform::db::SchemaSpec;
use corebank_platform::messaging::QueueSpec;
use corebank_platform::service::{AnyService, ErasedArgs};

/// Every service, callees first.
pub static SERVICES: &[&dyn AnyService] = &[
    &corebank_customer::CustomerService,
    &corebank_account::AccountService,
    &corebank_transaction::TransactionService,
    &corebank_fraud::FraudService,
    &corebank_orchestrator::OrchestratorService,
    &corebank_reporting::ReportingService,
    &corebank_gateway::GatewayService,
];

/// The service named `name`.
pub fn find(name: &str) -> Option<&'static dyn AnyService> {
    SERVICES
        .iter()
        .copied()
        .find(|service| service.name() == name)
}

/// Every service's schema, in start order.
pub fn schemas() -> Vec<SchemaSpec> {
    SERVICES.iter().map(|service| service.schema()).collect()
}

/// Every queue of the system: declared at migration time, like the schemas,
/// so no event is unroutable because its consumer has not started yet.
pub fn queues() -> Vec<QueueSpec> {
    SERVICES
        .iter()
        .flat_map(|service| service.queues())
        .collect()
}

/// Parses a service's name (`corebank serve <service>`); its help lists them.
pub fn parser() -> impl TypedValueParser<Value = &'static dyn AnyService> {
    PossibleValuesParser::new(SERVICES.iter().map(|service| service.name()))
        .map(|name| find(&name).expect("a possible value names a service"))
}

/// The flags of every service, flattened into `corebank up` and `serve`
/// (each service's own `*Args`, so the flags and their environment variables
/// are those its crate declares).
#[derive(Debug)]
pub struct EveryServiceArgs(Vec<(&'static str, ErasedArgs)>);

impl EveryServiceArgs {
    /// The flags of the service named `name`.
    pub fn of(&self, name: &str) -> Option<&ErasedArgs> {
        self.0
            .iter()
            .find(|(service, _)| *service == name)
            .map(|(_, args)| args)
    }
}

impl clap::FromArgMatches for EveryServiceArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let each = SERVICES
            .iter()
            .map(|service| Ok((service.name(), service.args_from_matches(matches)?)))
            .collect::<Result<_, clap::Error>>()?;
        Ok(Self(each))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for EveryServiceArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        SERVICES
            .iter()
            .fold(command, |command, service| service.augment_args(command))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn every_service_starts_after_the_services_it_calls() {
        for (position, service) in SERVICES.iter().enumerate() {
            for callee in service.calls() {
                let started_before = SERVICES[..position]
                    .iter()
                    .any(|earlier| earlier.name() == *callee);
                assert!(
                    started_before,
                    "{} calls {callee}, which must come before it",
                    service.name()
                );
            }
        }
    }

    #[test]
    fn names_schemas_and_default_addresses_are_unique() {
        let names: HashSet<_> = SERVICES.iter().map(|service| service.name()).collect();
        let schemas: HashSet<_> = schemas().iter().map(|spec| spec.schema).collect();
        let addrs: HashSet<_> = SERVICES
            .iter()
            .map(|service| service.default_addr())
            .collect();
        assert_eq!(names.len(), SERVICES.len());
        assert_eq!(schemas.len(), SERVICES.len());
        assert_eq!(addrs.len(), SERVICES.len());
    }

    /// `--<name>-addr` is how scripts and the crash test move a service.
    #[test]
    fn every_service_listens_where_its_addr_flag_says_by_default_its_default_addr() {
        for service in SERVICES {
            let args = service.parse_args(&[]).expect("defaults parse");
            let default: SocketAddr = service.default_addr().parse().expect("an address");
            assert_eq!(service.listen_addr(&args).expect("own flags"), default);

            let flag = format!("--{}-addr", service.name());
            let args = service
                .parse_args(&[&flag, "127.0.0.1:1"])
                .expect("the addr flag exists");
            assert_eq!(
                service.listen_addr(&args).expect("own flags").port(),
                1,
                "{flag}"
            );
        }
    }
}
