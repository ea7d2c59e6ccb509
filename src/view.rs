//! An event's outside view: its name and its fields, declared once per
//! kind ([`crate::event::Event::view`]) and rendered here for everything
//! outside the daemon that sees an event.
//!
//! | view | what it gets |
//! |---|---|
//! | hook stdin, webhook body ([`View::payload`]) | `type` = the name; each field under its name, absent ones `null` |
//! | hook environment ([`View::env`]) | `CVNOTIFY_EVENT_TYPE` = the name; `CVNOTIFY_{NAME}` per field, absent ones empty |
//! | the `log` handler's record ([`View::log_fields`]) | `event_type` = the name; each present field, URLs without their query |
//! | the message span ([`View::record_context`]) | `event_type` = the name; the fields marked [`Field::context`] |
//!
//! Values render by their kind ([`Value`]), the same way for every event:
//! text and ids as they are; numbers and booleans as JSON numbers and
//! booleans (decimal text in the environment); maps, lists and other JSON
//! as JSON in the payload and as compact JSON text in the environment and
//! the log; a [`Value::Url`] complete for hooks and webhooks (the receiver
//! must be able to download) but without its query (a SAS) in logs, and
//! never in a span. Outside text in a log record or a span is cut to
//! [`MAX_TEXT`]; NUL, which an environment variable cannot hold, becomes
//! U+FFFD there (stdin keeps the exact value).
//!
//! # Adding an event kind
//!
//! Write its variant and its decoder in [`crate::event`] (an Event Grid
//! kind: a variant of `grid::Data`, its decoding in `grid::decode`, its arm
//! in `GridEvent::view`, after the envelope's fields), then one arm in
//! `Event::view`: `View::new(origin, kind, name)` (the log record's message
//! is "{origin} event") and one `.field(name, value)` per field, in the
//! order users should read them, each an `Option<Value>` (`None` when the
//! message did not carry it: `null` in the payload, an empty variable, no
//! log field), with `.env_name(..)` where the variable should not be
//! `CVNOTIFY_{NAME}` (`BLOB_URL` for a field `url`), and `.context()` on
//! the one or two fields that say what the event is about. A context
//! field reaches the log lines of its message only if `worker/lifecycle.rs`
//! declares its name in the message span (`span.record` drops a name the
//! span lacks; the other views are unaffected). Hooks, webhooks, the `log`
//! handler and the message span then carry the kind with no other change.
//! The tests then ask for two things, and say so when they fail:
//! `event::samples` does not compile until the kind has a sample, and
//! `the_readme_lists_every_field_of_every_event_kind` fails until the
//! README's table of event fields has its new rows, which it prints; add
//! the sample's expected views to `the_view_of_each_event_kind_is_pinned`.
//! Routing names (`Event::type_key`, the `events` grammar in
//! [`crate::filter`]) are not part of the view.
//!
//! Adding a field to a Custom Vision kind is a member of the variant, its
//! decoding, and a member and a `.field(..)` line of `CustomVision` in
//! `event.rs` (every Custom Vision kind shows every Custom Vision field,
//! absent where it has none, as the payload always has).

use crate::limit::{MAX_TEXT, text};
use crate::secret::redact_url;
use serde_json::Value as Json;
use std::borrow::Cow;
use uuid::Uuid;

/// One event as the outside sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct View<'a> {
    /// Who sent it, for the log record's message (`Custom Vision event`).
    pub origin: &'static str,
    /// The kind, one per variant of the event (`export`, `unknown`).
    pub kind: &'static str,
    /// The name users see: the payload's `type`, `CVNOTIFY_EVENT_TYPE`,
    /// the `event_type` of logs and spans (`Export`; an unknown type's own
    /// value).
    pub name: &'a str,
    /// In the order they are shown.
    pub fields: Vec<Field<'a>>,
}

/// One field of a [`View`].
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    /// snake_case: the payload key and the log field.
    pub name: &'static str,
    /// The variable's name after `CVNOTIFY_`; by default the name in upper
    /// case.
    pub env_name: Option<&'static str>,
    /// `None`: the event has no such value (`null`, an empty variable, no
    /// log field).
    pub value: Option<Value<'a>>,
    /// Says what the event is about: every log line of its message carries
    /// it (through the message span).
    pub context: bool,
}

/// A field's value, by how it renders.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Text as sent (a status, a name).
    Text(&'a str),
    /// A GUID, written lower case with hyphens.
    Id(Uuid),
    /// A URL that may carry a credential in its query (a SAS).
    Url(&'a str),
    /// A whole number.
    Int(i64),
    /// A size, a count.
    UInt(u64),
    /// A measure (a drift coefficient); not finite is `null`.
    Float(f64),
    Bool(bool),
    /// A list of strings (model ids).
    List(&'a [String]),
    /// An object (tags, properties).
    Map(&'a serde_json::Map<String, Json>),
    /// Any JSON passed through as sent.
    Json(&'a Json),
}

impl<'a> View<'a> {
    pub fn new(origin: &'static str, kind: &'static str, name: &'a str) -> Self {
        Self {
            origin,
            kind,
            name,
            fields: Vec::new(),
        }
    }

    /// Adds a field, absent when `value` is `None`.
    pub fn field(mut self, name: &'static str, value: Option<Value<'a>>) -> Self {
        self.fields.push(Field {
            name,
            env_name: None,
            value,
            context: false,
        });
        self
    }

    /// Marks the last field added as context (see [`Field::context`]).
    pub fn context(mut self) -> Self {
        if let Some(f) = self.fields.last_mut() {
            f.context = true;
        }
        self
    }

    /// Names the last field's variable `CVNOTIFY_{name}`.
    pub fn env_name(mut self, name: &'static str) -> Self {
        if let Some(f) = self.fields.last_mut() {
            f.env_name = Some(name);
        }
        self
    }

    /// The event's part of the payload hooks and webhooks get: `type` and
    /// every field, `null` where absent.
    pub fn payload(&self) -> serde_json::Map<String, Json> {
        let mut out = serde_json::Map::with_capacity(self.fields.len() + 1);
        out.insert("type".into(), self.name.into());
        for f in &self.fields {
            out.insert(
                f.name.into(),
                f.value.as_ref().map_or(Json::Null, Value::to_json),
            );
        }
        out
    }

    /// The event's variables for a hook: `CVNOTIFY_EVENT_TYPE` and one per
    /// field, empty where absent.
    pub fn env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let name = ("CVNOTIFY_EVENT_TYPE".to_owned(), env_safe(self.name));
        let fields = self.fields.iter().map(|f| {
            let var = match f.env_name {
                Some(n) => format!("CVNOTIFY_{n}"),
                None => format!("CVNOTIFY_{}", f.name.to_ascii_uppercase()),
            };
            let value = f.value.as_ref().map(Value::to_text).unwrap_or_default();
            (var, env_safe(&value))
        });
        std::iter::once(name).chain(fields)
    }

    /// The fields of the `log` handler's record: `event_type` and the
    /// short fields first, then the long ones (URLs, maps, lists, JSON),
    /// which go after the delivery's own fields so that a line's start
    /// reads the same for every event. Absent fields are listed (the
    /// record's field set is the kind's) with no value, which writes
    /// nothing.
    pub fn log_fields(&self) -> (Vec<LogField>, Vec<LogField>) {
        let mut short = vec![(
            "event_type",
            Some(LogValue::Str(bounded(self.name).into_owned())),
        )];
        let mut long = Vec::new();
        for f in &self.fields {
            let value = f.value.as_ref().map(Value::to_log);
            if f.value.as_ref().is_some_and(Value::is_long) {
                long.push((f.name, value));
            } else {
                short.push((f.name, value));
            }
        }
        (short, long)
    }

    /// Records `event_type` and the context fields in `span`, which must
    /// declare them (as `tracing::field::Empty`): a name it does not
    /// declare is dropped. Ids are written bare, text quoted and cut to
    /// [`MAX_TEXT`]; a URL never (its query may be a credential, and spans
    /// go to traces).
    pub fn record_context(&self, span: &tracing::Span) {
        span.record("event_type", bounded(self.name).as_ref());
        for f in self.fields.iter().filter(|f| f.context) {
            match &f.value {
                None | Some(Value::Url(_)) => {}
                Some(Value::Id(id)) => {
                    span.record(f.name, tracing::field::display(id));
                }
                Some(Value::Int(n)) => {
                    span.record(f.name, *n);
                }
                Some(Value::UInt(n)) => {
                    span.record(f.name, *n);
                }
                Some(Value::Float(n)) => {
                    span.record(f.name, *n);
                }
                Some(Value::Bool(b)) => {
                    span.record(f.name, *b);
                }
                Some(v) => {
                    span.record(f.name, bounded(&v.to_text()).as_ref());
                }
            }
        }
    }
}

impl Value<'_> {
    /// The value in the payload.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Text(s) | Value::Url(s) => Json::String((*s).to_owned()),
            Value::Id(id) => Json::String(id.to_string()),
            Value::Int(n) => (*n).into(),
            Value::UInt(n) => (*n).into(),
            Value::Float(n) => (*n).into(),
            Value::Bool(b) => (*b).into(),
            Value::List(l) => l.iter().map(|s| Json::String(s.clone())).collect(),
            Value::Map(m) => Json::Object((*m).clone()),
            Value::Json(j) => (*j).clone(),
        }
    }

    /// The value as one line of text (a variable): JSON text for the
    /// structured kinds.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Value::Text(s) | Value::Url(s) => Cow::Borrowed(s),
            Value::Id(id) => Cow::Owned(id.to_string()),
            Value::Int(n) => Cow::Owned(n.to_string()),
            Value::UInt(n) => Cow::Owned(n.to_string()),
            // JSON's spelling (`1e300`), and empty where the payload has
            // `null` (not finite).
            Value::Float(_) => match self.to_json() {
                Json::Null => Cow::Borrowed(""),
                n => Cow::Owned(n.to_string()),
            },
            Value::Bool(_) | Value::List(_) | Value::Map(_) | Value::Json(_) => {
                Cow::Owned(self.to_json().to_string())
            }
        }
    }

    /// Whether the value goes at the end of a log record.
    fn is_long(&self) -> bool {
        matches!(
            self,
            Value::Url(_) | Value::List(_) | Value::Map(_) | Value::Json(_)
        )
    }

    fn to_log(&self) -> LogValue {
        match self {
            Value::Int(n) => LogValue::I64(*n),
            Value::UInt(n) => LogValue::U64(*n),
            Value::Float(n) => LogValue::F64(*n),
            Value::Bool(b) => LogValue::Bool(*b),
            // The SAS query is a credential: only the blob's address is logged.
            Value::Url(u) => LogValue::Str(bounded(&redact_url(u)).into_owned()),
            other => LogValue::Str(bounded(&other.to_text()).into_owned()),
        }
    }
}

/// A field of a log record: its name and its value, if it has one.
pub type LogField = (&'static str, Option<LogValue>);

/// A log record's value, written the way `tracing` writes the type.
#[derive(Debug, Clone)]
pub enum LogValue {
    /// Quoted in text lines.
    Str(String),
    /// Bare in text lines (an id the daemon made): `tracing::field::display`.
    Display(tracing::field::DisplayValue<String>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// Outside text as a log record or a span shows it.
fn bounded(s: &str) -> Cow<'_, str> {
    text(s, MAX_TEXT)
}

/// An environment variable cannot hold NUL; stdin carries the exact value,
/// the variable a replacement character.
fn env_safe(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// Writes one INFO record whose field names are known only at run time,
/// `message` first, to `target`. `tracing`'s macros need the names when
/// they are compiled (and tracing has no dynamic fields: tokio-rs/tracing
/// issue 2252), so this builds the callsite the macros would, once per list
/// of names (a few per process: the names are the kinds' own), and
/// dispatches through it exactly as `tracing::info!` does: same filters,
/// same formatting, same trace events, located at the caller (`module` is
/// the caller's `module_path!()`).
#[track_caller]
pub fn info(
    target: &'static str,
    module: &'static str,
    message: std::fmt::Arguments<'_>,
    fields: &[LogField],
) {
    if tracing::level_filters::LevelFilter::current() < tracing::Level::INFO {
        return;
    }
    let names: Vec<&'static str> = std::iter::once("message")
        .chain(fields.iter().map(|(n, _)| *n))
        .collect();
    let at = std::panic::Location::caller();
    let meta = callsite::for_fields((target, module, at.file(), at.line(), names));
    tracing::dispatcher::get_default(|dispatch| {
        if !dispatch.enabled(meta) {
            return;
        }
        let values: Vec<Option<&dyn tracing_core::field::Value>> =
            std::iter::once(Some(&message as &dyn tracing_core::field::Value))
                .chain(fields.iter().map(|(_, v)| {
                    v.as_ref().map(|v| match v {
                        LogValue::Str(s) => s as &dyn tracing_core::field::Value,
                        LogValue::Display(s) => s,
                        LogValue::U64(n) => n,
                        LogValue::I64(n) => n,
                        LogValue::F64(n) => n,
                        LogValue::Bool(b) => b,
                    })
                }))
                .collect();
        // `value_set_all` is what `tracing::info!` itself expands to (one
        // value per field, in order); hidden from the docs, but the macros
        // of every tracing 0.1 release after 0.1.41 call it.
        let values = meta.fields().value_set_all(&values);
        dispatch.event(&tracing::Event::new(meta, &values));
    });
}

/// The callsites of [`info`]: one per target and list of names, made on
/// first use and kept for the life of the process (as a macro's static
/// callsite is), registered so that filters learn of it.
mod callsite {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    use tracing_core::callsite::{Callsite, Identifier, register};
    use tracing_core::field::FieldSet;
    use tracing_core::metadata::Kind;
    use tracing_core::subscriber::Interest;
    use tracing_core::{Level, Metadata};

    struct Site(OnceLock<Metadata<'static>>);

    impl Callsite for Site {
        // Interest is asked of the dispatcher on every record instead.
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'static> {
            self.0.get().expect("set before the callsite is registered")
        }
    }

    /// Target, module, file, line, field names.
    type Key = (
        &'static str,
        &'static str,
        &'static str,
        u32,
        Vec<&'static str>,
    );

    static SITES: OnceLock<RwLock<HashMap<Key, &'static Site>>> = OnceLock::new();

    pub(super) fn for_fields(key: Key) -> &'static Metadata<'static> {
        let sites = SITES.get_or_init(Default::default);
        if let Some(site) = sites.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return site.metadata();
        }
        let mut sites = sites.write().unwrap_or_else(|e| e.into_inner());
        let site = *sites
            .entry(key)
            .or_insert_with_key(|(target, module, file, line, names)| {
                // Leaked once per key, like a macro's static.
                let site: &'static Site = Box::leak(Box::new(Site(OnceLock::new())));
                let names: &'static [&'static str] = Box::leak(names.clone().into_boxed_slice());
                let name: &'static str = Box::leak(format!("event {file}:{line}").into_boxed_str());
                let _ = site.0.set(Metadata::new(
                    name,
                    target,
                    Level::INFO,
                    Some(file),
                    Some(*line),
                    Some(module),
                    FieldSet::new(names, Identifier(site)),
                    Kind::EVENT,
                ));
                register(site);
                site
            });
        site.metadata()
    }
}

/// Test support: a subscriber's writer that keeps what it is given, for
/// the tests (here, in `event` and in the log handler) that pin log lines.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Written(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Written {
    /// What was written, without the last line break.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap().trim().to_owned()
    }
}

#[cfg(test)]
impl std::io::Write for Written {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Written {
    type Writer = Written;
    fn make_writer(&'a self) -> Written {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind with every shape of value issue 19's kinds bring: numbers,
    /// a map, a list, an absent field, a variable named apart from its
    /// field, a URL that is not context.
    fn blob<'a>(tags: &'a serde_json::Map<String, Json>, ids: &'a [String]) -> View<'a> {
        View::new("Blob Storage", "blob_created", "blob_created")
            .field(
                "url",
                Some(Value::Url("https://a.blob.core.windows.net/c/m.onnx?sig=s")),
            )
            .env_name("BLOB_URL")
            .field(
                "subject",
                Some(Value::Text(
                    "/blobServices/default/containers/c/blobs/m.onnx",
                )),
            )
            .context()
            .field("content_length", Some(Value::UInt(1024)))
            .field("offset", Some(Value::Int(-3)))
            .field("drift", Some(Value::Float(0.25)))
            .field("drift_nan", Some(Value::Float(f64::NAN)))
            .field("ok", Some(Value::Bool(true)))
            .field("etag", None)
            .field("tags", Some(Value::Map(tags)))
            .field("model_ids", Some(Value::List(ids)))
    }

    fn tags() -> serde_json::Map<String, Json> {
        serde_json::json!({"team": "vision", "n": 2})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn the_payload_has_every_field_with_its_json_type_and_null_where_absent() {
        let (t, ids) = (tags(), ["m:1".to_owned(), "m:2".to_owned()]);
        let payload = Json::Object(blob(&t, &ids).payload());
        assert_eq!(
            payload,
            serde_json::json!({
                "type": "blob_created",
                "url": "https://a.blob.core.windows.net/c/m.onnx?sig=s",
                "subject": "/blobServices/default/containers/c/blobs/m.onnx",
                "content_length": 1024,
                "offset": -3,
                "drift": 0.25,
                "drift_nan": null,
                "ok": true,
                "etag": null,
                "tags": {"team": "vision", "n": 2},
                "model_ids": ["m:1", "m:2"],
            })
        );
    }

    #[test]
    fn the_environment_has_one_variable_per_field_json_text_for_structures() {
        let (t, ids) = (tags(), ["m:1".to_owned(), "m:2".to_owned()]);
        let env: Vec<(String, String)> = blob(&t, &ids).env().collect();
        let want = [
            ("CVNOTIFY_EVENT_TYPE", "blob_created"),
            (
                "CVNOTIFY_BLOB_URL",
                "https://a.blob.core.windows.net/c/m.onnx?sig=s",
            ),
            (
                "CVNOTIFY_SUBJECT",
                "/blobServices/default/containers/c/blobs/m.onnx",
            ),
            ("CVNOTIFY_CONTENT_LENGTH", "1024"),
            ("CVNOTIFY_OFFSET", "-3"),
            ("CVNOTIFY_DRIFT", "0.25"),
            ("CVNOTIFY_DRIFT_NAN", ""),
            ("CVNOTIFY_OK", "true"),
            ("CVNOTIFY_ETAG", ""),
            ("CVNOTIFY_TAGS", r#"{"n":2,"team":"vision"}"#),
            ("CVNOTIFY_MODEL_IDS", r#"["m:1","m:2"]"#),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn nul_never_reaches_a_variable() {
        let v = View::new("Custom Vision", "unknown", "A\0B").field("s", Some(Value::Text("\0")));
        let env: Vec<(String, String)> = v.env().collect();
        assert_eq!(env[0].1, "A\u{fffd}B");
        assert_eq!(env[1].1, "\u{fffd}");
        assert_eq!(v.payload()["s"], "\0", "stdin keeps the exact value");
    }

    /// What `f` logs through a text or JSON subscriber at `level`.
    fn logged(level: tracing::Level, json: bool, f: impl Fn()) -> String {
        let out = Written::default();
        let fmt = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_max_level(level)
            .with_writer(out.clone());
        if json {
            tracing::subscriber::with_default(fmt.json().flatten_event(true).finish(), f);
        } else {
            tracing::subscriber::with_default(fmt.finish(), f);
        }
        out.text()
    }

    #[test]
    fn the_log_record_has_short_fields_first_urls_without_query_and_structures_as_json() {
        let (t, ids) = (tags(), ["m:1".to_owned()]);
        let view = blob(&t, &ids);
        let record = || {
            let (mut fields, long) = view.log_fields();
            fields.push((
                "message_id",
                Some(LogValue::Display(tracing::field::display("m-1".into()))),
            ));
            fields.extend(long);
            info(
                "cvnotify::event",
                module_path!(),
                format_args!("{} event", view.origin),
                &fields,
            );
        };
        assert_eq!(
            logged(tracing::Level::INFO, false, record),
            r#"INFO cvnotify::event: Blob Storage event event_type="blob_created" subject="/blobServices/default/containers/c/blobs/m.onnx" content_length=1024 offset=-3 drift=0.25 drift_nan=NaN ok=true message_id=m-1 url="https://a.blob.core.windows.net/c/m.onnx?REDACTED" tags="{\"n\":2,\"team\":\"vision\"}" model_ids="[\"m:1\"]""#
        );
        let json: Json = serde_json::from_str(&logged(tracing::Level::INFO, true, record)).unwrap();
        assert_eq!(json["content_length"], 1024);
        assert_eq!(json["ok"], true);
        assert_eq!(json["message"], "Blob Storage event");
        assert!(
            json.get("etag").is_none(),
            "absent fields are not written: {json}"
        );
        // Filters apply as to `tracing::info!`.
        assert_eq!(logged(tracing::Level::WARN, false, record), "");
    }

    #[test]
    fn the_span_gets_the_name_and_the_context_fields_only() {
        let (t, ids) = (tags(), ["m:1".to_owned()]);
        let view = blob(&t, &ids);
        let line = logged(tracing::Level::INFO, false, || {
            let span = tracing::info_span!(
                "message",
                event_type = tracing::field::Empty,
                subject = tracing::field::Empty,
                url = tracing::field::Empty,
                content_length = tracing::field::Empty,
            );
            view.record_context(&span);
            span.in_scope(|| tracing::info!("Inside"));
        });
        assert_eq!(
            line,
            r#"INFO message{event_type="blob_created" subject="/blobServices/default/containers/c/blobs/m.onnx"}: cvnotify::view::tests: Inside"#
        );
    }
}
