//! `google.api.http` path templates: parsing and matching.
//!
//! The grammar (from `google/api/http.proto`):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! A variable binds one path segment by default (`{account_id}`), or the
//! segments its own pattern names (`{name=accounts/*}`); `**` matches the
//! rest of the path and must come last.

use std::fmt;

/// One piece of a template after variables are expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: the rest of the path (possibly several segments).
    Rest,
}

/// A variable and the range of pieces it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, e.g. `["account", "account_id"]` for `{account.account_id}`.
    pub field_path: Vec<String>,
    start: usize,
    end: usize,
}

impl Variable {
    /// The dotted field path, as written in the template.
    pub fn name(&self) -> String {
        self.field_path.join(".")
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    pieces: Vec<Piece>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// A template that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {problem}")]
pub struct TemplateError {
    template: String,
    problem: &'static str,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |problem| TemplateError {
            template: template.to_owned(),
            problem,
        };
        let path = template
            .strip_prefix('/')
            .ok_or_else(|| fail("must start with '/'"))?;
        // The verb follows the last ':' outside braces.
        let mut depth = 0i32;
        let mut verb_at = None;
        for (at, c) in path.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(at),
                _ => {}
            }
        }
        let (segments, verb) = match verb_at {
            Some(at) => (&path[..at], Some(path[at + 1..].to_owned())),
            None => (path, None),
        };
        if verb.as_deref() == Some("") {
            return Err(fail("empty verb"));
        }
        let mut pieces = Vec::new();
        let mut variables = Vec::new();
        let mut rest = segments;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| fail("unclosed '{'"))?;
                let (field, pattern) = match inner[..close].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..close], "*"),
                };
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|part| !is_identifier(part)) {
                    return Err(fail("a variable names a field path"));
                }
                let start = pieces.len();
                for segment in pattern.split('/') {
                    pieces.push(piece(segment).ok_or_else(|| fail("bad variable pattern"))?);
                }
                variables.push(Variable {
                    field_path,
                    start,
                    end: pieces.len(),
                });
                rest = &inner[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                pieces.push(piece(&rest[..end]).ok_or_else(|| fail("bad segment"))?);
                rest = &rest[end..];
            }
            rest = match rest.strip_prefix('/') {
                Some("") => return Err(fail("trailing '/'")),
                Some(after) => after,
                None if rest.is_empty() => rest,
                None => return Err(fail("a variable must fill a whole segment")),
            };
        }
        if let Some(at) = pieces.iter().position(|piece| *piece == Piece::Rest)
            && at + 1 != pieces.len()
        {
            return Err(fail("'**' must be the last segment"));
        }
        Ok(Self {
            source: template.to_owned(),
            pieces,
            variables,
            verb,
        })
    }

    /// The template as written in the proto.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// The template as an OpenAPI path: variables as `{field.path}`, and
    /// literal wildcards kept as written.
    pub fn openapi_path(&self) -> String {
        let mut path = String::new();
        let mut at = 0;
        while at < self.pieces.len() {
            path.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == at) {
                path.push_str(&format!("{{{}}}", variable.name()));
                at = variable.end;
                continue;
            }
            match &self.pieces[at] {
                Piece::Literal(literal) => path.push_str(literal),
                Piece::One => path.push('*'),
                Piece::Rest => path.push_str("**"),
            }
            at += 1;
        }
        if let Some(verb) = &self.verb {
            path.push(':');
            path.push_str(verb);
        }
        path
    }

    /// Matches a request path (without query); on a match, the bound
    /// variables by dotted field path, percent-decoded.
    pub fn matches(&self, path: &str) -> Option<Vec<(Variable, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        // Without a verb in the template, a final segment must not carry one.
        if self.verb.is_none()
            && segments
                .last()
                .is_some_and(|last| last.contains(':') && !self.last_is_rest())
        {
            return None;
        }
        let mut bound: Vec<(usize, usize)> = Vec::with_capacity(self.pieces.len());
        let mut at = 0;
        for piece in &self.pieces {
            match piece {
                Piece::Literal(literal) => {
                    if segments.get(at) != Some(&literal.as_str()) {
                        return None;
                    }
                    bound.push((at, at + 1));
                    at += 1;
                }
                Piece::One => {
                    if segments.get(at).is_none_or(|segment| segment.is_empty()) {
                        return None;
                    }
                    bound.push((at, at + 1));
                    at += 1;
                }
                Piece::Rest => {
                    bound.push((at, segments.len()));
                    at = segments.len();
                }
            }
        }
        if at != segments.len() {
            return None;
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let first = bound[variable.start].0;
            let last = bound[variable.end - 1].1;
            let raw = segments[first..last].join("/");
            values.push((variable.clone(), percent_decode(&raw)?));
        }
        Some(values)
    }

    fn last_is_rest(&self) -> bool {
        self.pieces.last() == Some(&Piece::Rest)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn piece(segment: &str) -> Option<Piece> {
    match segment {
        "" => None,
        "*" => Some(Piece::One),
        "**" => Some(Piece::Rest),
        literal if literal.contains(['{', '}', '*', ':']) => None,
        literal => Some(Piece::Literal(literal.to_owned())),
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8 or an escape
/// is malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        let template = PathTemplate::parse(template).expect("a valid template");
        template.matches(path).map(|values| {
            values
                .into_iter()
                .map(|(variable, value)| (variable.name(), value))
                .collect()
        })
    }

    fn pairs(items: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            items
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_literal_template_matches_only_itself() {
        assert_eq!(bound("/v1/customers", "/v1/customers"), pairs(&[]));
        assert_eq!(bound("/v1/customers", "/v1/customers/x"), None);
        assert_eq!(bound("/v1/customers", "/v1/customer"), None);
    }

    #[test]
    fn a_variable_binds_one_segment() {
        assert_eq!(
            bound(
                "/v1/accounts/{account_id}/balance",
                "/v1/accounts/abc/balance"
            ),
            pairs(&[("account_id", "abc")])
        );
        assert_eq!(bound("/v1/accounts/{account_id}", "/v1/accounts/a/b"), None);
        assert_eq!(bound("/v1/accounts/{account_id}", "/v1/accounts/"), None);
    }

    #[test]
    fn a_custom_verb_is_matched_after_the_last_segment() {
        let template = "/v1/accounts/{account_id}:freeze";
        assert_eq!(
            bound(template, "/v1/accounts/abc:freeze"),
            pairs(&[("account_id", "abc")])
        );
        assert_eq!(bound(template, "/v1/accounts/abc:close"), None);
        assert_eq!(bound(template, "/v1/accounts/abc"), None);
        // Without a verb in the template, a verb in the path is another route.
        assert_eq!(
            bound("/v1/accounts/{account_id}", "/v1/accounts/abc:freeze"),
            None
        );
    }

    #[test]
    fn nested_field_paths_and_patterns_are_bound() {
        assert_eq!(
            bound("/v1/{account.account_id}/x", "/v1/abc/x"),
            pairs(&[("account.account_id", "abc")])
        );
        assert_eq!(
            bound("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            pairs(&[("name", "shelves/1/books/2")])
        );
        assert_eq!(
            bound("/v1/files/{path=**}", "/v1/files/a/b/c"),
            pairs(&[("path", "a/b/c")])
        );
    }

    #[test]
    fn variables_are_percent_decoded() {
        assert_eq!(
            bound("/v1/customers/{customer_id}", "/v1/customers/a%20b"),
            pairs(&[("customer_id", "a b")])
        );
        assert_eq!(
            bound("/v1/customers/{customer_id}", "/v1/customers/%zz"),
            None
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        for template in [
            "v1/x",
            "/v1/{x",
            "/v1/x/",
            "/v1/{a-b}",
            "/v1/**/x",
            "/v1/x:",
            "/v1/a{x}",
        ] {
            assert!(PathTemplate::parse(template).is_err(), "{template}");
        }
    }

    #[test]
    fn the_openapi_path_names_variables_and_keeps_the_verb() {
        let template = PathTemplate::parse("/v1/accounts/{account_id}:freeze").expect("valid");
        assert_eq!(template.openapi_path(), "/v1/accounts/{account_id}:freeze");
        assert_eq!(template.verb(), Some("freeze"));
    }
}
