//! Printing answers: canonical proto3 JSON with `--json`, readable
//! `field: value` lines otherwise, and errors with their reason and fields.
//!
//! Everything meant for stdout goes through [`write_out`] (or [`outln!`]),
//! never `println!`: `println!` panics when the reader has gone
//! (`corebank saga list | head -1`). Rust ignores SIGPIPE, so such a write
//! fails with `BrokenPipe`; that is taken as the reader saying "enough":
//! nothing more is written and the command ends with the exit code of its
//! own outcome (a FAILED transfer still exits 4). Restoring SIGPIPE's
//! default instead would kill the process mid-command and report 141
//! whatever happened, and would have to be kept away from `up` and `serve`,
//! which must never die because nobody reads their stdout.

use std::io::{ErrorKind, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;
use tonic_types::StatusExt;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes")
    })
}

/// `message` as canonical proto3 JSON (enum names, RFC 3339 times).
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> anyhow::Result<Value> {
    let descriptor = pool()
        .get_message_by_name(&M::full_name())
        .ok_or_else(|| anyhow::anyhow!("no descriptor for {}", M::full_name()))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    let options = SerializeOptions::new().stringify_64_bit_integers(false);
    Ok(dynamic.serialize_with_options(serde_json::value::Serializer, &options)?)
}

/// Parses canonical proto3 JSON into `M`, refusing unknown fields (a typo in
/// a rules file must not be dropped silently).
pub fn from_json<M: prost::Message + prost::Name + Default>(text: &str) -> anyhow::Result<M> {
    let descriptor = pool()
        .get_message_by_name(&M::full_name())
        .ok_or_else(|| anyhow::anyhow!("no descriptor for {}", M::full_name()))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut deserializer)?;
    deserializer.end()?;
    Ok(M::decode(
        prost::Message::encode_to_vec(&dynamic).as_slice(),
    )?)
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes it. A closed pipe is not an error:
/// it is remembered, and this and every later write do nothing.
pub fn write_out(text: &str) -> std::io::Result<()> {
    if stdout_closed() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        written => written,
    }
}

/// Whether the reader of stdout has gone: a command producing a stream of
/// lines stops early.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` through [`write_out`]: an `std::io::Result<()>`, quiet on a
/// closed pipe.
macro_rules! outln {
    () => {
        $crate::output::write_out("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Writes `text` to stderr, ignoring failure: a note that cannot be shown
/// must not stop the command (`eprintln!` would panic).
pub fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
}

/// Prints one answer.
pub fn print<M: prost::Message + prost::Name>(message: &M, json: bool) -> anyhow::Result<()> {
    let value = to_json(message)?;
    print_value(&value, json)
}

/// Prints a JSON value: pretty JSON with `--json`, `field: value` lines otherwise.
pub fn print_value(value: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(value)?)?;
    } else {
        let mut out = String::new();
        human(value, 0, &mut out);
        write_out(&out)?;
    }
    Ok(())
}

fn human(value: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                match field {
                    Value::Object(inner) if is_money(inner) => {
                        out.push_str(&format!("{pad}{}: {}\n", label(name), money(inner)));
                    }
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{}:\n", label(name)));
                        human(field, indent + 1, out);
                    }
                    Value::Array(items) => {
                        out.push_str(&format!("{pad}{} ({}):\n", label(name), items.len()));
                        for item in items {
                            out.push_str(&format!("{pad}  -\n"));
                            human(item, indent + 2, out);
                        }
                    }
                    other => out.push_str(&format!("{pad}{}: {}\n", label(name), scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn is_money(fields: &serde_json::Map<String, Value>) -> bool {
    fields.len() <= 2 && fields.contains_key("currency")
}

fn money(fields: &serde_json::Map<String, Value>) -> String {
    let amount = fields.get("amount").and_then(Value::as_str).unwrap_or("0");
    let currency = fields.get("currency").and_then(Value::as_str).unwrap_or("");
    format!("{amount} {currency}")
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => {
            // Enum names read better without their type prefix.
            for prefix in [
                "KYC_STATUS_",
                "ACCOUNT_STATUS_",
                "ACCOUNT_PRODUCT_",
                "HOLD_STATUS_",
                "ENTRY_DIRECTION_",
                "JOURNAL_KIND_",
                "TRANSACTION_STATUS_",
                "TRANSACTION_KIND_",
                "SAGA_STATE_",
            ] {
                if let Some(short) = text.strip_prefix(prefix) {
                    return short.to_owned();
                }
            }
            text.clone()
        }
        other => other.to_string(),
    }
}

/// `customerId` → `customer id`.
fn label(name: &str) -> String {
    let mut label = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            label.push(' ');
            label.push(c.to_ascii_lowercase());
        } else {
            label.push(c);
        }
    }
    label
}

/// Prints an error to stderr: for a gRPC error its code, reason and fields.
pub fn print_error(error: &anyhow::Error) {
    let mut text = String::new();
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        text.push_str(&format!(
            "error: {:?}: {}\n",
            status.code(),
            status.message()
        ));
        if let Some(info) = status.get_details_error_info() {
            text.push_str(&format!("  reason: {}\n", info.reason));
        }
        if let Some(bad) = status.get_details_bad_request() {
            for violation in bad.field_violations {
                text.push_str(&format!(
                    "  field {}: {}\n",
                    violation.field, violation.description
                ));
            }
        }
        if status.code() == tonic::Code::Unavailable {
            text.push_str("  is corebank running? start it with scripts/up\n");
        }
    } else {
        text.push_str(&format!("error: {error:#}\n"));
    }
    note(&text);
}
