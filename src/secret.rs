//! Secrets: the [`Secret`] type, the registry of every secret value the
//! process holds, and removing secrets from text before it leaves the
//! process.
//!
//! A leaf: imports nothing from the crate. Text leaves the process as log
//! lines, command output (`check`, `setup`, `poison list`, errors),
//! poison reasons and envelopes, exported spans and logged hook output;
//! each of those paths goes through [`redact`], which removes in one pass
//! (one Aho-Corasick automaton, rebuilt when a value is registered):
//! - every registered secret **value**: each [`Secret`] registers itself
//!   when it is made (the account key, SAS tokens, connection strings, the
//!   training key, webhook secrets, from the configuration or read from
//!   the files and variables it names); the configuration registers the
//!   values it holds outside a `Secret` (header values); credentials
//!   register the access tokens they fetch ([`register_temporary`]);
//! - the known **shapes**, whatever their value: `sig=`, `AccountKey=`,
//!   `SharedAccessSignature=`, `Bearer `, `whsec_`, JSON Web Tokens.
//!
//! [`load`] reads a secret given as a value, an environment variable or a
//! file (the training key, webhook secrets), the one way both do it.
//!
//! Handlers that need the real value (the shell hook's
//! `CVNOTIFY_MODEL_URI`) get it unredacted; logs never do. This module must
//! not log anything itself.

use aho_corasick::{AhoCorasick, Input, MatchKind};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, RwLock};

/// A value that must never be printed: `Debug` shows `***`. Making one
/// registers its value (see [`register`]), so it is removed from every
/// text that leaves the process.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        let s = s.into();
        register(&s);
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A string. Never `Serialize`: the schema shows no default for it, and
/// nothing can write one out by accident.
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// The shortest value registered, in characters. A shorter one would blank
/// ordinary words in every line (a header value `vision`, a key `test`),
/// and no credential the daemon can hold is that short: account keys have
/// 88 characters, SAS signatures 44 or more, training keys 32, tokens
/// hundreds. A shorter secret is still removed where it has a known shape.
pub const MIN_SECRET_LEN: usize = 8;

/// Run-time values (access tokens) kept registered; older ones have expired
/// long before 16 refreshes.
const MAX_TEMPORARY: usize = 16;

/// The registered values.
#[derive(Default)]
struct Registry {
    /// From the configuration: for the life of the process.
    lasting: BTreeSet<String>,
    /// Fetched at run time, oldest first; at most [`MAX_TEMPORARY`].
    temporary: VecDeque<String>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

/// What [`redact`] matches with: the shapes and the registered values.
/// Readers hold the lock only while they scan; registering builds the new
/// automaton first and swaps it in.
static REDACTOR: LazyLock<RwLock<Redactor>> =
    LazyLock::new(|| RwLock::new(Redactor::new(std::iter::empty())));

/// Registers a secret value held for the life of the process: it is
/// removed from every text that leaves it. Also registered: the forms the
/// value takes in URLs (percent-encoded or decoded), JSON strings and
/// `Debug` output; the signature of a SAS (`sig=`), the `AccountKey` and
/// `SharedAccessSignature` of a connection string, and the credential after
/// an authorization scheme (`Bearer x`, `Basic x`). Values shorter than
/// [`MIN_SECRET_LEN`] are ignored.
pub fn register(value: &str) {
    add(value, false);
}

/// As [`register`], for a value fetched at run time (an access token): the
/// [`MAX_TEMPORARY`] most recent ones stay registered.
pub fn register_temporary(value: &str) {
    add(value, true);
}

fn add(value: &str, temporary: bool) {
    let forms = forms(value);
    if forms.is_empty() {
        return;
    }
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut changed = false;
    for form in forms {
        if registry.lasting.contains(&form) || registry.temporary.contains(&form) {
            continue;
        }
        changed = true;
        if temporary {
            if registry.temporary.len() >= MAX_TEMPORARY {
                registry.temporary.pop_front();
            }
            registry.temporary.push_back(form);
        } else {
            registry.lasting.insert(form);
        }
    }
    if changed {
        let redactor = Redactor::new(registry.lasting.iter().chain(&registry.temporary));
        // Swapped while the registry is still locked, so that two
        // registrations cannot install their automatons out of order.
        *REDACTOR.write().unwrap_or_else(|e| e.into_inner()) = redactor;
    }
}

/// Every form of `value` worth matching (see [`register`]), at least
/// [`MIN_SECRET_LEN`] characters each.
fn forms(value: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let value = value.trim();
    let mut add = |v: &str| {
        let v = v.trim();
        if v.chars().count() < MIN_SECRET_LEN {
            return;
        }
        out.insert(v.to_owned());
        if v.contains('%')
            && let Ok(decoded) = percent_encoding::percent_decode_str(v).decode_utf8()
        {
            out.insert(decoded.into_owned());
        }
        out.insert(url::form_urlencoded::byte_serialize(v.as_bytes()).collect());
        // As a JSON log line and a text line's `Debug` field show it.
        let json = serde_json::Value::from(v).to_string();
        out.insert(json[1..json.len() - 1].to_owned());
        let debug = format!("{v:?}");
        out.insert(debug[1..debug.len() - 1].to_owned());
    };
    add(value);
    // The credential inside: a connection string's key or SAS, a SAS's
    // signature, an authorization header's credential.
    for pair in value.split(';') {
        if let Some((k, v)) = pair.split_once('=')
            && matches!(
                k.trim().to_ascii_lowercase().as_str(),
                "accountkey" | "sharedaccesssignature"
            )
        {
            add(v);
        }
    }
    for pair in value.split(['&', '?', ';']) {
        if let Some((k, v)) = pair.split_once('=')
            && k.trim().eq_ignore_ascii_case("sig")
        {
            add(v);
        }
    }
    if let Some((scheme, credential)) = value.split_once(' ')
        && !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphabetic())
    {
        add(credential);
    }
    out.retain(|v| v.chars().count() >= MIN_SECRET_LEN);
    out
}

/// How a shape's value ends.
#[derive(Clone, Copy)]
enum Pattern {
    /// A key (`sig=`) whose value, up to one of these characters or a
    /// control character, is a secret. A backslash ends every value: in a
    /// JSON or `Debug` string it starts an escape, which must stay whole.
    Key(&'static [char]),
    /// `eyJ`, the start of a JSON Web Token (a header always starts with
    /// `{"`): the whole `x.y.z` token is replaced.
    Jwt,
    /// A registered value.
    Value,
}

/// The shapes, matched case-insensitively (`eyJ` then checked exactly).
const SHAPES: [(&str, Pattern); 6] = [
    (
        "sig=",
        Pattern::Key(&['&', ' ', '"', '\'', ')', '>', '\n', ';', ',', '\\']),
    ),
    (
        "accountkey=",
        Pattern::Key(&[';', ' ', '"', '\'', '\n', '\\']),
    ),
    (
        "sharedaccesssignature=",
        Pattern::Key(&[';', ' ', '"', '\'', '\n', '\\']),
    ),
    (
        "bearer ",
        Pattern::Key(&[' ', '"', '\'', '\n', ',', ';', '\\']),
    ),
    (
        "whsec_",
        Pattern::Key(&[' ', '"', '\'', '\n', ',', ';', '&', '\\']),
    ),
    ("eyJ", Pattern::Jwt),
];

const REDACTED: &str = "REDACTED";

/// One automaton for the shapes and the registered values, so a line is
/// scanned once however many values there are (a loop of `find`s would
/// scan it once per value).
///
/// Matching is ASCII case-insensitive, but the automaton is built
/// case-sensitive over lower-cased patterns and searches a lower-cased copy
/// of the line (same length, same offsets): aho-corasick's own
/// case-insensitive mode cannot use its fast prefilter, which made a
/// typical line cost 3 µs instead of about 0.3 µs.
struct Redactor {
    automaton: AhoCorasick,
    patterns: Vec<Pattern>,
}

thread_local! {
    /// The lower-cased copy of the line being redacted, reused.
    static LOWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Redactor {
    fn new<'a>(values: impl Iterator<Item = &'a String>) -> Self {
        let mut texts: Vec<String> = SHAPES.iter().map(|(t, _)| t.to_ascii_lowercase()).collect();
        let mut patterns: Vec<Pattern> = SHAPES.iter().map(|(_, p)| *p).collect();
        for v in values {
            texts.push(v.to_ascii_lowercase());
            patterns.push(Pattern::Value);
        }
        let build = |texts: &[String]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(texts)
        };
        // Building fails only beyond billions of states; then the shapes
        // alone are still matched.
        match build(&texts) {
            Ok(automaton) => Redactor {
                automaton,
                patterns,
            },
            Err(_) => Redactor {
                automaton: build(&texts[..SHAPES.len()]).expect("the shapes build"),
                patterns: patterns[..SHAPES.len()].to_vec(),
            },
        }
    }

    fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        LOWER.with_borrow_mut(|lower| {
            lower.clear();
            lower.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
            self.redact_with(text, lower)
        })
    }

    /// `lower` is `text` lower-cased (ASCII only: same byte offsets).
    fn redact_with<'t>(&self, text: &'t str, lower: &[u8]) -> Cow<'t, str> {
        let mut out = String::new();
        // Bytes of `text` already copied into `out`.
        let mut copied = 0;
        let mut at = 0;
        while at < text.len() {
            let Some(m) = self.automaton.find(Input::new(lower).span(at..lower.len())) else {
                break;
            };
            let (start, end) = match self.patterns[m.pattern().as_usize()] {
                Pattern::Value => (m.start(), m.end()),
                Pattern::Key(ends) => {
                    let end = text[m.end()..]
                        .find(|c: char| ends.contains(&c) || c.is_control())
                        .map_or(text.len(), |e| e + m.end());
                    (m.end(), end)
                }
                Pattern::Jwt => {
                    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
                    let candidate = &text[m.start()..];
                    let len = candidate
                        .find(|c: char| !(is_b64(c) || c == '.'))
                        .unwrap_or(candidate.len());
                    let parts: Vec<&str> = candidate[..len].split('.').take(3).collect();
                    if candidate.starts_with("eyJ")
                        && parts.len() == 3
                        && parts.iter().all(|p| !p.is_empty())
                    {
                        (m.start(), m.start() + len)
                    } else {
                        // Not a token (or `EYJ`): look again one byte on,
                        // where a registered value may start.
                        at = m.start() + 1;
                        continue;
                    }
                }
            };
            if end > start && &text[start..end] != REDACTED {
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = end;
            }
            at = end.max(m.end()).max(at + 1);
        }
        if copied == 0 {
            Cow::Borrowed(text)
        } else {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

/// A URL with its query removed: a SAS token lives in the query, and any
/// part of it (`sig=` above all) is a credential.
pub fn redact_url(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            let had_query = url.query().is_some();
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            if had_query {
                format!("{url}?REDACTED")
            } else {
                url.to_string()
            }
        }
        Err(_) => redact_text(uri),
    }
}

/// `text` with every registered secret value replaced by `REDACTED`, and
/// the values of `sig=`, `AccountKey=` and `SharedAccessSignature=`
/// (case-insensitive), the token after `Bearer `, the key after `whsec_`,
/// and anything shaped like a JSON Web Token (`eyJ...` with three
/// dot-separated parts). Borrowed when there was nothing to remove (most
/// log lines), so the log path allocates only for lines that had a secret.
pub fn redact(text: &str) -> Cow<'_, str> {
    REDACTOR
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .redact(text)
}

/// [`redact`], owned.
pub fn redact_text(text: &str) -> String {
    redact(text).into_owned()
}

/// [`redact`] for text that was cut short where it arrived (a hook's
/// output line beyond 4 KiB): also a trailing piece of a registered value,
/// at least 4 characters of its start, whose rest was cut off. Where the
/// whole text is at hand, redact first and cut after instead.
pub fn redact_cut(text: &str) -> String {
    let mut out = redact_text(text);
    let lower = out.to_ascii_lowercase();
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut longest = 0;
    for value in registry.lasting.iter().chain(&registry.temporary) {
        let value = value.to_ascii_lowercase();
        // The earliest start whose rest of `out` begins `value`.
        let from = lower.len().saturating_sub(value.len() - 1);
        for start in from..lower.len().saturating_sub(3) {
            if lower.is_char_boundary(start) && value.starts_with(&lower[start..]) {
                longest = longest.max(lower.len() - start);
                break;
            }
        }
    }
    if longest > 0 {
        out.truncate(out.len() - longest);
        out.push_str(REDACTED);
    }
    out
}

/// A secret named by an environment variable or a file that cannot be
/// read. `key` is the configuration key the secret is given by, without
/// its `_env`/`_file` suffix (`customvision.training_key`, a webhook's
/// `secret`), so the message names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{key}_env: the environment variable {var} is not set; set it in cvnotify's environment (systemd Environment= or EnvironmentFile=, the container's env) or give the secret another way"
    )]
    EnvNotSet { key: &'static str, var: String },
    #[error("{key}_file: cannot read {}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A secret given in one of the three ways the configuration offers: its
/// value (`key`), the name of an environment variable holding it
/// (`{key}_env`, taken as it is), or the path of a file holding it
/// (`{key}_file`, surrounding white space removed: an editor's trailing
/// newline is not part of the secret). The first one given wins
/// (validation allows only one); `None` when none is. A value read from a
/// variable or a file becomes a [`Secret`] here, so it is registered as the
/// configuration's own values are when it loads.
pub fn load(
    key: &'static str,
    value: Option<&Secret>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SourceError> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| SourceError::EnvNotSet {
                key,
                var: var.to_owned(),
            });
    }
    let Some(path) = file else {
        return Ok(None);
    };
    std::fs::read_to_string(path)
        .map(|v| Some(Secret::new(v.trim())))
        .map_err(|source| SourceError::File {
            key,
            path: path.to_owned(),
            source,
        })
}

/// Text from outside (a message, a service's answer, a hook) made fit for
/// a terminal or a line of output: secrets redacted, control characters
/// escaped (see [`escape_control`]).
pub fn printable(text: &str) -> String {
    escape_control(&redact(text)).into_owned()
}

/// Escapes control characters (escape sequences, carriage returns, NUL...)
/// so that text from a message or a hook cannot drive a terminal or forge
/// log lines: `\u{1b}`, `\r`, `\n`, `\t`.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one loader both `training_key*` and a webhook's `secret*` go
    /// through: the value wins, a file is trimmed and registered, and a
    /// missing source names the variable or the file.
    #[test]
    fn secrets_load_from_a_value_a_variable_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  file-secret-0123456789\n").unwrap();
        let inline = Secret::new("inline-secret-0123456789");
        let got = load("k", Some(&inline), Some("UNUSED"), Some(&path)).unwrap();
        assert_eq!(got.unwrap().expose(), "inline-secret-0123456789");
        let got = load("k", None, None, Some(&path)).unwrap().unwrap();
        assert_eq!(got.expose(), "file-secret-0123456789");
        assert_eq!(redact_text("x file-secret-0123456789 y"), "x REDACTED y");
        assert!(load("k", None, None, None).unwrap().is_none());

        let var = "CVNOTIFY_TEST_SECRET_THAT_IS_NEVER_SET";
        let e = load("customvision.training_key", None, Some(var), None).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "customvision.training_key_env: the environment variable {var} is not set; set it in cvnotify's environment"
            )),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = load("secret", None, None, Some(&missing)).unwrap_err();
        assert!(
            matches!(&e, SourceError::File { path, .. } if *path == missing),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("secret_file: cannot read {}", missing.display())
        );
    }

    #[test]
    fn url_query_is_dropped() {
        assert_eq!(
            redact_url("https://a.blob.core.windows.net/c/p%20-%20i.ONNX?sv=2022&sig=AbC%2Bd&se=x"),
            "https://a.blob.core.windows.net/c/p%20-%20i.ONNX?REDACTED"
        );
        assert_eq!(
            redact_url("https://a.blob.core.windows.net/c/m.zip"),
            "https://a.blob.core.windows.net/c/m.zip"
        );
    }

    #[test]
    fn text_secrets_are_replaced() {
        let t = redact_text("error sending request for url (http://h/q?se=1&SIG=abc%2F&sp=r): x");
        assert_eq!(
            t,
            "error sending request for url (http://h/q?se=1&SIG=REDACTED&sp=r): x"
        );
        let t = redact_text("AccountName=a;AccountKey=c2VjcmV0;QueueEndpoint=x");
        assert_eq!(t, "AccountName=a;AccountKey=REDACTED;QueueEndpoint=x");
        let t = redact_text("sig=a sig=b");
        assert_eq!(t, "sig=REDACTED sig=REDACTED");
    }

    #[test]
    fn tokens_and_webhook_secrets_are_replaced() {
        let t = redact_text("Authorization: Bearer abc.def-ghi, next");
        assert_eq!(t, "Authorization: Bearer REDACTED, next");
        let t = redact_text("HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(t, "HOOK_SECRET=whsec_REDACTED");
        let t = redact_text("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl done");
        assert_eq!(t, "token REDACTED done");
        // Not a JWT: left alone.
        assert_eq!(redact_text("eyJust words."), "eyJust words.");
        assert_eq!(redact_text("plain text"), "plain text");
    }

    #[test]
    fn registered_values_are_removed_in_every_form() {
        // A value only this test registers (tests share the process).
        let key = "k3y/For+Registry=Test0001";
        assert_eq!(redact_text(&format!("x {key} y")), format!("x {key} y"));
        register(key);
        assert_eq!(redact_text(&format!("x {key} y")), "x REDACTED y");
        // Case-insensitive, percent-encoded, as a JSON string shows it.
        assert_eq!(redact_text("a K3Y/FOR+REGISTRY=TEST0001 b"), "a REDACTED b");
        assert_eq!(
            redact_text("u?k=k3y%2FFor%2BRegistry%3DTest0001&x=1"),
            "u?k=REDACTED&x=1"
        );
        let quoted = "say \"hi\" to 0123\\4567";
        register("say \"hi\" to 0123\\4567");
        let json = serde_json::Value::from(quoted).to_string();
        assert_eq!(redact_text(&json), "\"REDACTED\"");
        // The credential inside a connection string, a SAS, a header value.
        register("AccountName=a;AccountKey=QWNjb3VudEtleUZvclRlc3Q=;EndpointSuffix=x");
        assert_eq!(
            redact_text("key QWNjb3VudEtleUZvclRlc3Q= leaked"),
            "key REDACTED leaked"
        );
        register("sv=2022-11-02&sp=r&sig=U2lnbmF0dXJlRm9yVGVzdA%3D%3D");
        assert_eq!(
            redact_text("sig U2lnbmF0dXJlRm9yVGVzdA== seen"),
            "sig REDACTED seen"
        );
        assert_eq!(
            redact_text("version sv=2022-11-02 is public"),
            "version sv=2022-11-02 is public"
        );
        register("Basic dXNlcjpwYXNzd29yZA==");
        assert_eq!(
            redact_text("creds dXNlcjpwYXNzd29yZA== seen"),
            "creds REDACTED seen"
        );
    }

    #[test]
    fn a_value_cut_off_at_the_end_is_removed_from_cut_text() {
        register("cut-off-secret-value-0001");
        assert_eq!(
            redact_cut("line ending cut-off-sec"),
            "line ending REDACTED"
        );
        assert_eq!(
            redact_cut("line ending CUT-OFF-SECRET-VALUE-00"),
            "line ending REDACTED"
        );
        // Fewer than 4 characters of it, or none: left alone.
        assert_eq!(redact_cut("line ending cut"), "line ending cut");
        assert_eq!(redact_cut("plain line"), "plain line");
        assert_eq!(
            redact_cut("whole cut-off-secret-value-0001 x"),
            "whole REDACTED x"
        );
    }

    #[test]
    fn short_values_are_not_registered() {
        register("vision");
        register("  ab  ");
        assert_eq!(redact_text("the vision ab team"), "the vision ab team");
    }

    #[test]
    fn temporary_values_expire_after_newer_ones() {
        register_temporary("token-number-first-000");
        assert_eq!(redact_text("token-number-first-000"), "REDACTED");
        for i in 0..MAX_TEMPORARY {
            register_temporary(&format!("token-number-later-{i:03}"));
        }
        assert_eq!(
            redact_text("token-number-first-000"),
            "token-number-first-000"
        );
        assert_eq!(redact_text("token-number-later-001"), "REDACTED");
    }

    #[test]
    fn clean_text_is_borrowed_and_json_stays_json() {
        assert!(matches!(redact("nothing to see here"), Cow::Borrowed(_)));
        // A signature ending at a JSON escape keeps the escape whole.
        let line = serde_json::json!({"error": "url \"http://h/?sig=abc\" failed"}).to_string();
        let redacted = redact_text(&line);
        let back: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(back["error"], "url \"http://h/?sig=REDACTED\" failed");
    }

    #[test]
    fn printable_redacts_and_escapes() {
        assert_eq!(
            printable("name\u{1b}[2J\nok    sig=abc"),
            "name\\u{1b}[2J\\nok    sig=REDACTED"
        );
    }

    /// Not a pass/fail test: the cost of [`redact`] on a typical text log
    /// line inside a message, with the values a configured daemon holds.
    /// `cargo nextest run --lib secret::tests::redaction_cost --run-ignored
    /// only --no-capture` (build with optimisations for a meaningful number).
    #[test]
    #[ignore]
    fn redaction_cost_per_log_line() {
        register(
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        );
        register("0123456789abcdef0123456789abcdef");
        register("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        register(
            "sv=2022-11-02&ss=q&srt=sco&sp=raup&se=2030-01-01T00:00:00Z&sig=c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ%3D%3D",
        );
        register("Authorization=Bearer%20otlp-collector-token-0123456789");
        register_temporary(&format!(
            "eyJ0eXAiOiJKV1QifQ.{}.c2ln",
            "eyJhdWQiOiJzdG9yYWdlIn0".repeat(40)
        ));
        let line = "2026-12-02T04:21:16.675715Z  INFO message{message_id=eb671480-67a0-4423-b891-67899b09c0cb dequeue_count=1 event_type=\"Training\" project_id=1a8b6381-3e71-43fc-a141-b8e4a929bb5c iteration_id=d04ea56b-1359-40ed-8271-d27cb68cac1b}:handler{handler=log#0}: Custom Vision event event_type=\"Training\" project_id=\"1a8b6381-3e71-43fc-a141-b8e4a929bb5c\" iteration_id=\"d04ea56b-1359-40ed-8271-d27cb68cac1b\" status=\"TrainingFailed\" message_id=eb671480-67a0-4423-b891-67899b09c0cb dequeue_count=1\n";
        let with_secret = line.replace(
            "status=\"TrainingFailed\"",
            "error=\"GET https://a.blob.core.windows.net/m?sv=1&sig=abc failed: key 0123456789abcdef0123456789abcdef\"",
        );
        let n = 200_000;
        let time = |line: &str| {
            let started = std::time::Instant::now();
            let mut kept = 0;
            for _ in 0..n {
                kept += redact(std::hint::black_box(line)).len();
            }
            (started.elapsed() / n, kept / n as usize)
        };
        let (clean, kept) = time(line);
        assert_eq!(kept, line.len());
        let (dirty, kept) = time(&with_secret);
        assert!(kept < with_secret.len());
        let forms = {
            let r = REGISTRY.lock().unwrap();
            r.lasting.len() + r.temporary.len()
        };
        eprintln!(
            "redact: {clean:?} per {}-byte log line without a secret, {dirty:?} per {}-byte line with two ({forms} registered forms)",
            line.len(),
            with_secret.len(),
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("ok"), "ok");
        assert_eq!(
            escape_control("a\u{1b}]0;pwned\u{7}b\r\nc\0"),
            "a\\u{1b}]0;pwned\\u{7}b\\r\\nc\\u{0}"
        );
    }
}
