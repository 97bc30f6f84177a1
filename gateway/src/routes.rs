//! The route table, built once at start from the `google.api.http`
//! annotations and `corebank.v1.scope` options of a descriptor pool. No route
//! is written per RPC: any annotated method of any service in the pool is
//! served, including one added after this code was written.

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MethodDescriptor, Value,
};

use crate::template::{PathTemplate, Variable};

/// The HTTP rule extension on `google.protobuf.MethodOptions`.
pub const HTTP_EXTENSION: &str = "google.api.http";
/// The required-scope extension on `google.protobuf.MethodOptions`.
pub const SCOPE_EXTENSION: &str = "corebank.v1.scope";
/// The request field an `Idempotency-Key` header fills.
pub const IDEMPOTENCY_FIELD: &str = "idempotency_key";

/// Where the request body goes.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body (GET, DELETE): every field not in the path is a query parameter.
    None,
    /// `body: "*"`: the whole request message.
    Whole,
    /// `body: "field"`: one field; the rest are query parameters.
    Field(FieldDescriptor),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: Method,
    pub template: PathTemplate,
    pub body: BodyRule,
    pub method: MethodDescriptor,
    /// The scope a caller's token must carry; `None` when the method declares none.
    pub scope: Option<String>,
}

impl Route {
    /// `corebank.v1.AccountService`.
    pub fn service_name(&self) -> &str {
        self.method.parent_service().full_name()
    }

    /// `/corebank.v1.AccountService/GetAccount`, the gRPC path.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.service_name(), self.method.name())
    }

    pub fn is_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// A route that changes state: anything but GET.
    pub fn is_mutating(&self) -> bool {
        self.http_method != Method::GET
    }

    /// The request's `idempotency_key` field, when it has one.
    pub fn idempotency_field(&self) -> Option<FieldDescriptor> {
        self.method
            .input()
            .get_field_by_name(IDEMPOTENCY_FIELD)
            .filter(|field| field.kind() == Kind::String && !field.is_list())
    }

    /// `operationId`: `AccountService_GetAccount`, plus the binding's index
    /// when a method has several.
    pub fn operation_id(&self, binding: usize) -> String {
        let id = format!(
            "{}_{}",
            self.method.parent_service().name(),
            self.method.name()
        );
        if binding == 0 {
            id
        } else {
            format!("{id}_{binding}")
        }
    }
}

/// Path variables bound by a match, with their values.
pub type Bound = Vec<(Variable, String)>;

/// What a request found.
#[derive(Debug)]
pub enum Found<'a> {
    Route(&'a Route, Vec<(Variable, String)>),
    /// The path exists, with other methods.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// Every route of a descriptor pool.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Reads every annotated, non-client-streaming method of every service.
    pub fn from_pool(pool: &DescriptorPool) -> anyhow::Result<Self> {
        let http = pool.get_extension_by_name(HTTP_EXTENSION);
        let scope = pool.get_extension_by_name(SCOPE_EXTENSION);
        let mut routes = Vec::new();
        let Some(http) = http else {
            return Ok(Self { routes });
        };
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http) || method.is_client_streaming() {
                    continue;
                }
                let required_scope = scope
                    .as_ref()
                    .filter(|scope| options.has_extension(scope))
                    .and_then(|scope| options.get_extension(scope).as_str().map(str::to_owned))
                    .filter(|scope| !scope.is_empty());
                let rule = options.get_extension(&http);
                let Some(rule) = rule.as_message() else {
                    continue;
                };
                let mut rules = vec![rule.clone()];
                if let Some(Value::List(more)) =
                    rule.get_field_by_name("additional_bindings").as_deref()
                {
                    rules.extend(more.iter().filter_map(|value| value.as_message().cloned()));
                }
                for rule in rules {
                    let route = route(&method, &rule, required_scope.clone())
                        .map_err(|error| anyhow::anyhow!("{}: {error}", method.full_name()))?;
                    routes.push(route);
                }
            }
        }
        Ok(Self { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` and `path`. Literal matches win over
    /// variables: routes are tried most-literal first.
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let mut allowed = Vec::new();
        let mut best: Option<(usize, &Route, Bound)> = None;
        for route in &self.routes {
            let Some(values) = route.template.matches(path) else {
                continue;
            };
            if route.http_method != *method {
                allowed.push(route.http_method.clone());
                continue;
            }
            let bound = values.len();
            if best.as_ref().is_none_or(|(fewest, ..)| bound < *fewest) {
                best = Some((bound, route, values));
            }
        }
        match best {
            Some((_, route, values)) => Found::Route(route, values),
            None if !allowed.is_empty() => Found::MethodNotAllowed(allowed),
            None => Found::NotFound,
        }
    }
}

fn route(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    scope: Option<String>,
) -> anyhow::Result<Route> {
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let verbs = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ];
    let mut binding = verbs
        .into_iter()
        .find(|(name, _)| rule.has_field_by_name(name))
        .map(|(name, verb)| (verb, text(name)));
    if binding.is_none()
        && let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
    {
        let kind = custom
            .get_field_by_name("kind")
            .and_then(|v| v.as_str().map(str::to_owned));
        let path = custom
            .get_field_by_name("path")
            .and_then(|v| v.as_str().map(str::to_owned));
        if let (Some(kind), Some(path)) = (kind, path) {
            binding = Some((Method::from_bytes(kind.as_bytes())?, path));
        }
    }
    let (http_method, path) =
        binding.ok_or_else(|| anyhow::anyhow!("http rule without a pattern"))?;
    let template = PathTemplate::parse(&path)?;
    let input = method.input();
    for variable in template.variables() {
        let field = field_at(&input, &variable.field_path)
            .ok_or_else(|| anyhow::anyhow!("path variable {} names no field", variable.name()))?;
        if field.is_list() || matches!(field.kind(), Kind::Message(_)) {
            anyhow::bail!("path variable {} must name a scalar field", variable.name());
        }
    }
    let body = match text("body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("body names no field: {name}"))?,
        ),
    };
    Ok(Route {
        http_method,
        template,
        body,
        method: method.clone(),
        scope,
    })
}

/// The field a dotted path names, through nested messages.
pub fn field_at(
    message: &prost_reflect::MessageDescriptor,
    path: &[String],
) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for part in parents {
        let field = current.get_field_by_name(part)?;
        match field.kind() {
            Kind::Message(inner) if !field.is_list() => current = inner,
            _ => return None,
        }
    }
    current.get_field_by_name(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
        RouteTable::from_pool(&pool).expect("routes")
    }

    #[test]
    fn every_annotated_corebank_rpc_has_a_route_and_a_scope() {
        let table = table();
        assert!(table.routes().len() > 30, "{}", table.routes().len());
        for route in table.routes() {
            assert!(
                route.scope.is_some(),
                "{} declares no scope",
                route.method.full_name()
            );
        }
    }

    #[test]
    fn a_custom_verb_route_is_found_with_its_variable() {
        let table = table();
        let Found::Route(route, values) = table.find(&Method::POST, "/v1/accounts/abc:freeze")
        else {
            panic!("no route");
        };
        assert_eq!(route.method.name(), "FreezeAccount");
        assert_eq!(route.scope.as_deref(), Some("accounts:write"));
        assert_eq!(values[0].1, "abc");
        assert!(matches!(route.body, BodyRule::Whole));
    }

    #[test]
    fn the_wrong_method_is_told_apart_from_an_unknown_path() {
        let table = table();
        assert!(matches!(
            table.find(&Method::DELETE, "/v1/accounts/abc"),
            Found::MethodNotAllowed(_)
        ));
        assert!(matches!(
            table.find(&Method::GET, "/v1/nothing"),
            Found::NotFound
        ));
    }

    #[test]
    fn watch_transaction_is_a_streaming_route() {
        let table = table();
        let Found::Route(route, _) = table.find(&Method::GET, "/v1/transactions/t1:watch") else {
            panic!("no route");
        };
        assert!(route.is_streaming());
        assert_eq!(
            route.grpc_path(),
            "/corebank.v1.TransactionService/WatchTransaction"
        );
    }
}
