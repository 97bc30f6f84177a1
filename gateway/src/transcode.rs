//! HTTP ⇄ protobuf: a request's path variables, query parameters, body and
//! `Idempotency-Key` become one request message; a response message becomes
//! canonical proto3 JSON.
//!
//! The body is checked against the descriptor before prost-reflect reads it,
//! so that a refusal names the field: an unknown field (a partner's typo is
//! never dropped silently), a JSON number where a string is expected (every
//! amount is a decimal string), and nesting deeper than the limit. The body's
//! keys (proto or JSON names) are rewritten to proto names; path variables,
//! query parameters and the header then fill the same JSON tree, and
//! prost-reflect decodes it once.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

use crate::errors::GatewayError;
use crate::routes::{BodyRule, IDEMPOTENCY_FIELD, Route};
use crate::template::{Variable, percent_decode};

/// How deeply a JSON body may nest.
pub const MAX_JSON_DEPTH: usize = 32;

/// Everything of an HTTP request that maps to the request message.
#[derive(Debug, Default)]
pub struct HttpInput<'a> {
    pub variables: Vec<(Variable, String)>,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub idempotency_key: Option<&'a str>,
}

/// The request message of `route` for `input`.
pub fn request_message(
    route: &Route,
    input: HttpInput<'_>,
) -> Result<DynamicMessage, GatewayError> {
    let descriptor = route.method.input();
    let mut tree = match &route.body {
        BodyRule::None => {
            if !input.body.iter().all(u8::is_ascii_whitespace) {
                return Err(GatewayError::invalid_field(
                    "body",
                    "this route takes no request body",
                ));
            }
            Map::new()
        }
        BodyRule::Whole => normalized_object(&descriptor, "", parse_body(input.body)?, 1)?,
        BodyRule::Field(field) => {
            let body = parse_body(input.body)?;
            let mut wrapped = Map::new();
            wrapped.insert(field.name().to_owned(), body);
            normalized_object(&descriptor, "", Value::Object(wrapped), 0)?
        }
    };

    let mut bound = Vec::new();
    for (variable, value) in input.variables {
        let field = crate::routes::field_at(&descriptor, &variable.field_path)
            .ok_or_else(|| GatewayError::invalid_field(&variable.name(), "no such field"))?;
        let json = scalar_json(&field, &value, &variable.name())?;
        set_path(&mut tree, &variable.field_path, json, &variable.name())?;
        bound.push(variable.name());
    }

    if let Some(query) = input.query.filter(|query| !query.is_empty()) {
        if matches!(route.body, BodyRule::Whole) {
            return Err(GatewayError::invalid_field(
                "query",
                "this route takes its fields in the body, not the query string",
            ));
        }
        apply_query(&descriptor, &mut tree, query, &bound, &route.body)?;
    }

    if let Some(key) = input.idempotency_key.filter(|key| !key.is_empty())
        && route.idempotency_field().is_some()
    {
        let path = [IDEMPOTENCY_FIELD.to_owned()];
        match tree.get(IDEMPOTENCY_FIELD) {
            Some(Value::String(body_key)) if !body_key.is_empty() && body_key != key => {
                return Err(GatewayError::invalid_field(
                    IDEMPOTENCY_FIELD,
                    "differs from the Idempotency-Key header",
                ));
            }
            _ => set_path(&mut tree, &path, Value::from(key), IDEMPOTENCY_FIELD)?,
        }
    }

    DynamicMessage::deserialize(descriptor, Value::Object(tree)).map_err(|error| {
        GatewayError::invalid_field("body", format!("not a valid request: {error}"))
    })
}

/// A message as canonical proto3 JSON: int64 as strings, enums by name,
/// Timestamps in RFC 3339, default values included (so every documented
/// field is always present).
pub fn response_json(message: &DynamicMessage) -> Result<Vec<u8>, GatewayError> {
    let mut serializer = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut serializer, &serialize_options())
        .map_err(|error| {
            tracing::error!(%error, "response does not serialize");
            GatewayError::new(
                tonic::Code::Internal,
                "INTERNAL",
                crate::errors::OPAQUE_MESSAGE,
            )
        })?;
    Ok(serializer.into_inner())
}

pub fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .skip_default_fields(false)
}

fn parse_body(body: &[u8]) -> Result<Value, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| GatewayError::invalid_field("body", format!("not valid JSON: {error}")))?;
    if depth(&value) > MAX_JSON_DEPTH {
        return Err(GatewayError::invalid_field(
            "body",
            format!("nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    Ok(value)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Checks a JSON object against `message` and renames its keys to proto names.
fn normalized_object(
    message: &MessageDescriptor,
    prefix: &str,
    value: Value,
    _level: usize,
) -> Result<Map<String, Value>, GatewayError> {
    let fields = match value {
        Value::Object(fields) => fields,
        Value::Null => Map::new(),
        _ => {
            let name = if prefix.is_empty() { "body" } else { prefix };
            return Err(GatewayError::invalid_field(name, "must be a JSON object"));
        }
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let path = join(prefix, &key);
        let field = message
            .get_field_by_name(&key)
            .or_else(|| message.get_field_by_json_name(&key))
            .ok_or_else(|| GatewayError::invalid_field(&path, "unknown field"))?;
        let value = normalized_value(&field, &path, value)?;
        if out.insert(field.name().to_owned(), value).is_some() {
            return Err(GatewayError::invalid_field(&path, "given twice"));
        }
    }
    Ok(out)
}

fn normalized_value(
    field: &FieldDescriptor,
    path: &str,
    value: Value,
) -> Result<Value, GatewayError> {
    if value.is_null() {
        return Ok(value);
    }
    if field.is_map() {
        let Value::Object(entries) = value else {
            return Err(GatewayError::invalid_field(path, "must be a JSON object"));
        };
        let value_field = match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field(),
            _ => return Ok(Value::Object(entries)),
        };
        let mut out = Map::new();
        for (key, item) in entries {
            let item = single(&value_field, &join(path, &key), item)?;
            out.insert(key, item);
        }
        return Ok(Value::Object(out));
    }
    if field.is_list() {
        let Value::Array(items) = value else {
            return Err(GatewayError::invalid_field(path, "must be a JSON array"));
        };
        return items
            .into_iter()
            .enumerate()
            .map(|(at, item)| single(field, &format!("{path}[{at}]"), item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    single(field, path, value)
}

/// One value of a field's kind.
fn single(field: &FieldDescriptor, path: &str, value: Value) -> Result<Value, GatewayError> {
    match field.kind() {
        Kind::String | Kind::Bytes if value.is_number() => Err(GatewayError::invalid_field(
            path,
            "must be a JSON string, not a number (amounts are decimal strings)",
        )),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
                if value.is_number() =>
            {
                Err(GatewayError::invalid_field(path, "must be a JSON string"))
            }
            name if name.starts_with("google.protobuf.") => Ok(value),
            _ => normalized_object(&message, path, value, 0).map(Value::Object),
        },
        _ => Ok(value),
    }
}

/// A path variable or query value as the JSON proto3 reads for `field`.
fn scalar_json(field: &FieldDescriptor, text: &str, name: &str) -> Result<Value, GatewayError> {
    let bad = |what: &str| GatewayError::invalid_field(name, format!("must be {what}"));
    Ok(match field.kind() {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::from(text.parse::<i32>().map_err(|_| bad("a 32-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::from(
            text.parse::<u32>()
                .map_err(|_| bad("an unsigned 32-bit integer"))?,
        ),
        Kind::Float | Kind::Double => {
            Value::from(text.parse::<f64>().map_err(|_| bad("a number"))?)
        }
        Kind::Enum(_) => match text.parse::<i32>() {
            Ok(number) => Value::from(number),
            Err(_) => Value::from(text),
        },
        Kind::Message(message) if !message.full_name().starts_with("google.protobuf.") => {
            return Err(bad("set in the body, not the path or query"));
        }
        // Strings, 64-bit integers (strings in proto3 JSON), bytes, and the
        // well-known types written as strings (Timestamp, Duration, wrappers).
        _ => Value::from(text),
    })
}

/// Sets `path` in the tree; a different value already there (from the
/// body) is a conflict.
fn set_path(
    tree: &mut Map<String, Value>,
    path: &[String],
    value: Value,
    name: &str,
) -> Result<(), GatewayError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut node = tree;
    for part in parents {
        let entry = node
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        node = entry
            .as_object_mut()
            .ok_or_else(|| GatewayError::invalid_field(name, "conflicts with the body"))?;
    }
    match node.get(last) {
        Some(existing) if !existing.is_null() && !same(existing, &value) => Err(
            GatewayError::invalid_field(name, "differs between the path and the body"),
        ),
        _ => {
            node.insert(last.clone(), value);
            Ok(())
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    a == b
        || a.as_str().is_some_and(|a| Some(a) == b.as_str())
        || a.to_string().trim_matches('"') == b.to_string().trim_matches('"')
}

fn apply_query(
    message: &MessageDescriptor,
    tree: &mut Map<String, Value>,
    query: &str,
    bound: &[String],
    body: &BodyRule,
) -> Result<(), GatewayError> {
    let mut repeated: Vec<(Vec<String>, String, Vec<Value>)> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_query(raw_key)?;
        let value = decode_query(raw_value)?;
        let (path, field) = query_field(message, &key)?;
        let name = path.join(".");
        if bound.contains(&name) {
            return Err(GatewayError::invalid_field(
                &key,
                "already given in the path",
            ));
        }
        if let BodyRule::Field(body_field) = body
            && path.first().map(String::as_str) == Some(body_field.name())
        {
            return Err(GatewayError::invalid_field(
                &key,
                "already given in the body",
            ));
        }
        let json = scalar_json(&field, &value, &key)?;
        if field.is_list() {
            match repeated.iter_mut().find(|(existing, ..)| *existing == path) {
                Some((_, _, values)) => values.push(json),
                None => repeated.push((path, key, vec![json])),
            }
        } else {
            if query_seen(tree, &path) {
                return Err(GatewayError::invalid_field(&key, "given twice"));
            }
            set_path(tree, &path, json, &key)?;
        }
    }
    for (path, key, values) in repeated {
        set_path(tree, &path, Value::Array(values), &key)?;
    }
    Ok(())
}

fn query_seen(tree: &Map<String, Value>, path: &[String]) -> bool {
    let mut node = tree;
    for (at, part) in path.iter().enumerate() {
        match node.get(part) {
            None => return false,
            Some(Value::Object(inner)) if at + 1 < path.len() => node = inner,
            Some(_) => return at + 1 == path.len(),
        }
    }
    false
}

/// The field a query key names (`a.b`, proto or JSON names), with its proto-name path.
fn query_field(
    message: &MessageDescriptor,
    key: &str,
) -> Result<(Vec<String>, FieldDescriptor), GatewayError> {
    let mut current = message.clone();
    let mut path = Vec::new();
    let parts: Vec<&str> = key.split('.').collect();
    for (at, part) in parts.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| GatewayError::invalid_field(key, "unknown query parameter"))?;
        path.push(field.name().to_owned());
        if at + 1 == parts.len() {
            if field.is_map() {
                return Err(GatewayError::invalid_field(key, "maps go in the body"));
            }
            return Ok((path, field));
        }
        match field.kind() {
            Kind::Message(inner) if !field.is_list() => current = inner,
            _ => return Err(GatewayError::invalid_field(key, "unknown query parameter")),
        }
    }
    Err(GatewayError::invalid_field(key, "unknown query parameter"))
}

fn decode_query(text: &str) -> Result<String, GatewayError> {
    percent_decode(&text.replace('+', " "))
        .ok_or_else(|| GatewayError::invalid_field("query", "malformed percent-encoding"))
}

#[cfg(test)]
#[path = "transcode_tests.rs"]
mod tests;
