//! The scope each RPC needs, read once from the `(corebank.v1.scope)` method
//! option in the descriptor set: the servers, the gateway and the tests read
//! the same declaration.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

/// Every method of every corebank service, by gRPC path
/// (`/corebank.v1.AccountService/GetAccount`), with the scope it declares
/// (`None`: the proto declares none, which a test forbids).
pub fn method_scopes() -> &'static BTreeMap<String, Option<&'static str>> {
    static SCOPES: OnceLock<BTreeMap<String, Option<&'static str>>> = OnceLock::new();
    SCOPES.get_or_init(|| read_scopes(corebank_proto::FILE_DESCRIPTOR_SET))
}

/// The scope a gRPC path needs, e.g. `"/corebank.v1.AccountService/GetAccount"`
/// → `"accounts:read"`; `None` for a path no corebank service declares.
pub fn required_scope(grpc_path: &str) -> Option<&'static str> {
    method_scopes().get(grpc_path).copied().flatten()
}

fn read_scopes(descriptor_set: &[u8]) -> BTreeMap<String, Option<&'static str>> {
    let pool =
        DescriptorPool::decode(descriptor_set).expect("the compiled-in descriptor set decodes");
    let extension = pool.get_extension_by_name("corebank.v1.scope");
    let mut scopes = BTreeMap::new();
    for service in pool.services() {
        if !service.full_name().starts_with("corebank.") {
            continue;
        }
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            let scope = extension
                .as_ref()
                .filter(|extension| options.has_extension(extension))
                .and_then(|extension| {
                    options
                        .get_extension(extension)
                        .as_str()
                        .filter(|scope| !scope.trim().is_empty())
                        .map(|scope| &*Box::leak(scope.to_owned().into_boxed_str()))
                });
            scopes.insert(path, scope);
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_in_the_descriptor_set_declares_a_scope() {
        let scopes = method_scopes();
        assert!(scopes.len() > 10, "found only {} methods", scopes.len());
        let missing: Vec<_> = scopes
            .iter()
            .filter(|(_, scope)| scope.is_none())
            .map(|(path, _)| path.as_str())
            .collect();
        assert!(missing.is_empty(), "methods without a scope: {missing:?}");
    }

    #[test]
    fn the_scope_of_a_method_comes_from_its_option() {
        assert_eq!(
            required_scope("/corebank.v1.AccountService/GetAccount"),
            Some("accounts:read")
        );
        assert_eq!(required_scope("/corebank.v1.AccountService/Nope"), None);
    }
}
