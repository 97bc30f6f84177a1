//! The spans of one trace as a tree: parent links, ancestry, which part of
//! the system each span ran in, the hops across AMQP, and the tree printed
//! for a failure's message.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::receiver::Received;

/// The spans of one trace, by id, with the tree and the parent links.
pub struct Trace<'a> {
    by_id: HashMap<&'a str, &'a Received>,
    pub spans: Vec<&'a Received>,
}

impl<'a> Trace<'a> {
    pub fn of(spans: &'a [Received], trace_id: &str) -> Trace<'a> {
        let spans: Vec<&Received> = spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .collect();
        let by_id = spans
            .iter()
            .map(|span| (span.span_id.as_str(), *span))
            .collect();
        Trace { by_id, spans }
    }

    pub fn parent(&self, span: &Received) -> Option<&'a Received> {
        self.by_id.get(span.parent_id.as_str()).copied()
    }

    /// `span`, its parent, its parent's parent… up to the root.
    pub fn ancestry(&self, span: &'a Received) -> Vec<&'a Received> {
        let mut chain = vec![span];
        while let Some(parent) = self.parent(chain[chain.len() - 1]) {
            if chain.len() > self.spans.len() {
                break;
            }
            chain.push(parent);
        }
        chain
    }

    /// Which part of the system a span ran in: the consumer (its queue),
    /// the gRPC service or the gateway of its nearest span that says.
    pub fn component(&self, span: &'a Received) -> String {
        for at in self.ancestry(span) {
            match at.name.as_str() {
                "handle_batch" => return format!("consumer {}", at.attribute("queue")),
                "grpc" => return format!("grpc {}", at.attribute("service")),
                "http" => return "gateway".to_owned(),
                _ => {}
            }
        }
        "unknown".to_owned()
    }

    /// The spans whose parent is not in the trace.
    pub fn roots(&self) -> Vec<&'a Received> {
        self.spans
            .iter()
            .filter(|span| self.parent(span).is_none())
            .copied()
            .collect()
    }

    /// Consumer spans whose parent ran in another part of the system: a
    /// parent link across an AMQP hop.
    pub fn hops(&self) -> Vec<(&'a Received, &'a Received)> {
        self.spans
            .iter()
            .filter(|span| matches!(span.name.as_str(), "handle_batch" | "handle_message"))
            .filter_map(|span| Some((*span, self.parent(span)?)))
            .filter(|(span, parent)| self.component(span) != self.component(parent))
            .collect()
    }

    /// The handling span of the first message of type `…{suffix}`.
    pub fn handling(&self, suffix: &str) -> Option<&'a Received> {
        self.spans
            .iter()
            .filter(|span| {
                span.name == "handle_message" && span.attribute("message_type").ends_with(suffix)
            })
            .min_by_key(|span| span.start)
            .copied()
    }

    /// The trace as an indented tree, children in start order.
    pub fn tree(&self) -> String {
        let mut children: HashMap<&str, Vec<&Received>> = HashMap::new();
        for span in &self.spans {
            children
                .entry(span.parent_id.as_str())
                .or_default()
                .push(span);
        }
        for siblings in children.values_mut() {
            siblings.sort_by_key(|span| span.start);
        }
        let mut out = String::new();
        let mut roots = self.roots();
        roots.sort_by_key(|span| span.start);
        let mut stack: Vec<(&Received, usize)> =
            roots.into_iter().rev().map(|span| (span, 0)).collect();
        while let Some((span, depth)) = stack.pop() {
            let orphan = if !span.parent_id.is_empty() && self.parent(span).is_none() {
                format!(" ORPHAN (parent {} not received)", span.parent_id)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:indent$}{} {} [{}] {:.1} ms{orphan}",
                "",
                span.name,
                span.detail(),
                self.component(span),
                span.end.saturating_sub(span.start) as f64 / 1e6,
                indent = depth * 2
            );
            if let Some(kids) = children.get(span.span_id.as_str()) {
                stack.extend(kids.iter().rev().map(|kid| (*kid, depth + 1)));
            }
        }
        out
    }
}
