//! What the decoders of [`super`] share: the error that names a field and
//! its problem, the JSON kind of a value, and the validation of a URL that
//! handlers will fetch.

use serde_json::Value;

/// Why a body could not be decoded. The message names the field and the
/// problem; retrying cannot fix any of these, so such messages are poisoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not valid JSON ({json}) and not base64-encoded JSON ({base64})")]
    NotJsonOrBase64 { json: String, base64: String },
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is base64 but the decoded bytes are not valid JSON: {0}")]
    InvalidBase64Json(String),
    #[error("the body is JSON but not an object or an array (found {0})")]
    NotAnObject(&'static str),
    #[error("the body is an empty array: it holds no event")]
    EmptyArray,
    #[error("`{field}`: {problem}")]
    Field { field: String, problem: String },
}

pub(super) fn field_err(field: impl Into<String>, problem: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` as an http(s) URL, for the field `field`. The parsed, normalized
/// form is what handlers get.
pub(super) fn http_url(field: &str, s: &str) -> Result<url::Url, DecodeError> {
    // The URL parser would silently drop tabs and newlines and trim control
    // characters, so a string that reached hooks and webhooks as is could
    // differ from the URL validated here: refuse them, and forward the
    // parsed, normalized form.
    let s = s.trim_matches(' ');
    if let Some((at, c)) = s
        .char_indices()
        .find(|&(at, c)| (c.is_control() || c.is_whitespace()) && !space_in_path(s, at, c))
    {
        return Err(field_err(
            field,
            format!(
                "not a URL: it contains {}",
                if c == ' ' {
                    // A SAS never holds a space: one there is a `+` that was
                    // form-decoded, and encoding it would not give the
                    // signature back.
                    if s[..at].contains(['?', '#']) {
                        "white space in its query (a SAS never has any: was a `+` decoded to a space?)"
                            .to_owned()
                    } else {
                        "white space before its path".to_owned()
                    }
                } else if c.is_whitespace() && !c.is_control() {
                    "white space".to_owned()
                } else {
                    format!("the control character U+{:04X}", c as u32)
                }
            ),
        ));
    }
    // The parser percent-encodes a space in the path (and leaves an `%20`
    // as it is), so the literal and the encoded forms give the same URL.
    let url = url::Url::parse(s).map_err(|e| field_err(field, format!("not a URL ({e})")))?;
    // A model lives in blob storage; anything but http(s) (file://, ftp://, data:)
    // is not a model location and must never reach a handler as one.
    if !matches!(url.scheme(), "https" | "http") {
        return Err(field_err(
            field,
            format!("scheme `{}` is not allowed; expected https", url.scheme()),
        ));
    }
    Ok(url)
}

/// Whether `c` at byte `at` of `s` is a plain space inside the URL's path:
/// after the authority (`scheme://host/`) and before any `?` or `#`. Blob
/// names hold spaces (a backup is `{projectId} - {iterationId}.{platform}`),
/// and a producer writing `Uri.OriginalString` sends them unencoded; the
/// parser encodes them once. Anywhere else a space is refused.
fn space_in_path(s: &str, at: usize, c: char) -> bool {
    if c != ' ' {
        return false;
    }
    let Some(authority) = s.find("://").map(|i| i + 3) else {
        return false;
    };
    let Some(path) = s[authority..].find('/').map(|i| authority + i) else {
        return false;
    };
    let end = s.find(['?', '#']).unwrap_or(s.len());
    path < at && at < end
}
