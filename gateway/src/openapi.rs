//! The OpenAPI 3.1 document, generated from the same route table and
//! descriptors the gateway serves: every route with its path and query
//! parameters, every message as a schema in its canonical proto3 JSON form
//! (int64 as string, Timestamp as `date-time`, Duration as a seconds string,
//! enums by name, money amounts as decimal strings), the error shape, the
//! `Idempotency-Key` header, the bearer scheme and each operation's scope.

use std::collections::{BTreeMap, BTreeSet};

use corebank_platform::auth::{AUDIT_READS, AUDIT_SCOPE};
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{BodyRule, Route, RouteTable};

/// A decimal amount: digits, an optional fraction, an optional sign.
pub const DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";
/// A proto3 JSON Duration: seconds with an `s` suffix.
pub const DURATION_PATTERN: &str = r"^-?[0-9]+(\.[0-9]{1,9})?s$";

/// The document for every route of `table`.
pub fn document(table: &RouteTable) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut bindings: BTreeMap<String, usize> = BTreeMap::new();
    for route in table.routes() {
        let count = bindings
            .entry(route.method.full_name().to_owned())
            .or_insert(0);
        let operation = operation(route, *count, &mut schemas);
        *count += 1;
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_lowercase(), operation);
    }
    let mut components = schemas.finish();
    components.insert(
        "Status".to_owned(),
        json!({
            "type": "object",
            "description": "An error: the gRPC code number, a message, and google.rpc details (ErrorInfo, BadRequest, RetryInfo) each with an @type.",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["@type"],
                        "properties": {"@type": {"type": "string"}},
                        "additionalProperties": true
                    }
                }
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "corebank partner API",
            "version": "v1",
            "description": "REST facade over corebank's gRPC APIs, generated from the proto annotations. Bodies are canonical proto3 JSON; unknown fields are refused; amounts are decimal strings."
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "responses": {
                "Error": {
                    "description": "An error in the standard shape.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
                }
            }
        },
        "security": [{"bearer": []}]
    })
}

fn operation(route: &Route, binding: usize, schemas: &mut Schemas) -> Value {
    let input = route.method.input();
    let mut parameters = Vec::new();
    let mut bound = BTreeSet::new();
    for variable in route.template.variables() {
        let name = variable.name();
        let field = crate::routes::field_at(&input, &variable.field_path);
        let schema = field.map_or_else(|| json!({"type": "string"}), |f| schemas.field(&f));
        parameters.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        bound.insert(name);
    }
    let body_field = match &route.body {
        BodyRule::Field(field) => Some(field.name().to_owned()),
        _ => None,
    };
    if !matches!(route.body, BodyRule::Whole) {
        for (name, field) in query_fields(&input, "", 0) {
            if bound.contains(&name)
                || body_field.as_deref() == Some(name.split('.').next().unwrap_or(""))
            {
                continue;
            }
            let schema = schemas.field(&field);
            parameters
                .push(json!({"name": name, "in": "query", "required": false, "schema": schema}));
        }
    }
    if route.idempotency_field().is_some() {
        parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Fills the request's idempotency_key: the same key with the same request replays the first response (with Idempotent-Replayed: true); with another request it is refused.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}
        }));
    }
    let mut operation = Map::new();
    operation.insert(
        "operationId".into(),
        Value::from(route.operation_id(binding)),
    );
    operation.insert("summary".into(), Value::from(route.method.full_name()));
    operation.insert("tags".into(), json!([route.method.parent_service().name()]));
    operation.insert("parameters".into(), Value::Array(parameters));
    let body_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole => Some(schemas.message(&input)),
        BodyRule::Field(field) => Some(schemas.field(field)),
    };
    if let Some(schema) = body_schema {
        operation.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
    }
    let output = schemas.message(&route.method.output());
    let success = if route.is_streaming() {
        json!({
            "description": "A stream of messages: Server-Sent Events (one event per message, with an id for Last-Event-ID) with Accept: text/event-stream, newline-delimited JSON otherwise.",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": output}
            }
        })
    } else {
        let mut headers = Map::new();
        if route.idempotency_field().is_some() {
            headers.insert(
                "Idempotent-Replayed".into(),
                json!({"description": "true when this is the stored response of an earlier request with the same key", "schema": {"type": "string", "enum": ["true"]}}),
            );
        }
        json!({
            "description": "OK",
            "headers": headers,
            "content": {"application/json": {"schema": output}}
        })
    };
    let mut responses = Map::new();
    responses.insert("200".into(), success);
    for status in [
        "400", "401", "403", "404", "409", "413", "429", "500", "503", "504",
    ] {
        responses.insert(
            status.into(),
            json!({"$ref": "#/components/responses/Error"}),
        );
    }
    operation.insert("responses".into(), Value::Object(responses));
    if let Some(scope) = &route.scope {
        // Alternatives: the declared scope, or `audit:read` where an auditor
        // reads it too (accounts, transactions, statements).
        let mut security = vec![json!({"bearer": [scope]})];
        if AUDIT_READS.contains(&scope.as_str()) {
            security.push(json!({"bearer": [AUDIT_SCOPE]}));
        }
        operation.insert("security".into(), Value::Array(security));
        operation.insert("x-required-scope".into(), Value::from(scope.as_str()));
    }
    Value::Object(operation)
}

/// Every scalar (or well-known-type) field of a message reachable as a
/// query parameter, by dotted proto name; nested messages expanded.
pub fn query_fields(
    message: &MessageDescriptor,
    prefix: &str,
    depth: usize,
) -> Vec<(String, FieldDescriptor)> {
    let mut out = Vec::new();
    for field in message.fields() {
        let name = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(inner) if !inner.full_name().starts_with("google.protobuf.") => {
                if !field.is_list() && depth < 3 {
                    out.extend(query_fields(&inner, &name, depth + 1));
                }
            }
            _ => out.push((name, field)),
        }
    }
    out
}

/// The schemas referenced so far, by component name.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    fn finish(self) -> Map<String, Value> {
        self.done.into_iter().collect()
    }

    fn reference(name: &str) -> Value {
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// A `$ref` to a message's schema, adding it (and what it uses) once.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_owned();
        if let Some(schema) = well_known(&name) {
            return schema;
        }
        if !self.done.contains_key(&name) {
            self.done.insert(name.clone(), Value::Null);
            let mut properties = Map::new();
            for field in message.fields() {
                properties.insert(field.json_name().to_owned(), self.field(&field));
            }
            let schema = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false
            });
            self.done.insert(name.clone(), schema);
        }
        Self::reference(&name)
    }

    fn enumeration(&mut self, enumeration: &EnumDescriptor) -> Value {
        let name = enumeration.full_name().to_owned();
        if !self.done.contains_key(&name) {
            let values: Vec<Value> = enumeration
                .values()
                .map(|value| Value::from(value.name()))
                .collect();
            self.done
                .insert(name.clone(), json!({"type": "string", "enum": values}));
        }
        Self::reference(&name)
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => self.single(&entry.map_entry_value_field()),
                _ => json!({}),
            };
            return json!({"type": "object", "additionalProperties": value});
        }
        let single = self.single(field);
        if field.is_list() {
            json!({"type": "array", "items": single})
        } else {
            single
        }
    }

    fn single(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::String if is_amount(field) => json!({
                "type": "string",
                "pattern": DECIMAL_PATTERN,
                "description": "a decimal amount as a string, e.g. \"125.50\"; never a JSON number"
            }),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"})
            }
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Enum(enumeration) => self.enumeration(&enumeration),
            Kind::Message(message) => self.message(&message),
        }
    }
}

/// A money amount: `Money.amount`, or any string field named like one
/// (`amount`, `*_amount`).
fn is_amount(field: &FieldDescriptor) -> bool {
    let name = field.name();
    name == "amount" || name.ends_with("_amount")
}

fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "pattern": DURATION_PATTERN}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}}})
        }
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "contentEncoding": "base64"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({"type": "number"}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn corebank_document() -> Value {
        let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
        document(&RouteTable::from_pool(&pool).expect("routes"))
    }

    #[test]
    fn every_route_is_documented_with_its_scope() {
        let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let table = RouteTable::from_pool(&pool).expect("routes");
        let document = document(&table);
        for route in table.routes() {
            let path = route.template.openapi_path();
            let method = route.http_method.as_str().to_lowercase();
            let operation = &document["paths"][&path][&method];
            assert!(operation.is_object(), "{method} {path} missing");
            assert_eq!(
                operation["x-required-scope"].as_str(),
                route.scope.as_deref(),
                "{method} {path}"
            );
            assert_eq!(
                operation["security"][0]["bearer"][0].as_str(),
                route.scope.as_deref()
            );
            let auditor = route
                .scope
                .as_deref()
                .is_some_and(|scope| AUDIT_READS.contains(&scope));
            assert_eq!(
                operation["security"][1]["bearer"][0].as_str(),
                auditor.then_some(AUDIT_SCOPE),
                "{method} {path}: an auditor's alternative where it reads"
            );
        }
    }

    #[test]
    fn schemas_follow_canonical_proto3_json() {
        let document = corebank_document();
        let schemas = &document["components"]["schemas"];
        let money = &schemas["corebank.v1.Money"]["properties"];
        assert_eq!(money["amount"]["type"], "string");
        assert_eq!(money["amount"]["pattern"], DECIMAL_PATTERN);
        let transaction = &schemas["corebank.v1.Transaction"]["properties"];
        assert_eq!(transaction["createTime"]["format"], "date-time");
        assert_eq!(
            schemas["corebank.v1.TransactionStatus"]["enum"][0],
            "TRANSACTION_STATUS_UNSPECIFIED"
        );
        assert_eq!(
            schemas["corebank.v1.Transaction"]["additionalProperties"],
            false
        );
        assert!(schemas["Status"]["properties"]["details"].is_object());
    }

    #[test]
    fn path_query_and_header_parameters_are_documented() {
        let document = corebank_document();
        let list = &document["paths"]["/v1/accounts/{account_id}/transactions"]["get"];
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|parameter| parameter["name"].as_str())
            .collect();
        assert!(names.contains(&"account_id"));
        assert!(names.contains(&"page_size"));
        assert!(names.contains(&"status"));
        let transfer = &document["paths"]["/v1/transfers"]["post"];
        let header = transfer["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|parameter| parameter["name"] == "Idempotency-Key" && parameter["in"] == "header");
        assert!(header, "{transfer}");
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
