//! A STAND-IN FOR THE CUSTOM VISION TRAINING SERVICE, NOT THE SERVICE.
//!
//! No real Custom Vision resource is reachable from these tests, so this
//! loopback HTTP server was written from the project's reference notes
//! (`shared/reference/custom-vision-training-api.md`, the Training API v3.3
//! subset cvnotify uses, and `custom-vision-storage-integration.md`, the
//! public storage integration guide). Passing tests against it show that
//! cvnotify does what those documents describe; they cannot show that the
//! real service behaves as described where the reference marks something
//! as not confirmed.
//!
//! What it follows from the reference:
//! - Paths `/customvision/v3.3/training/...` (the `training` segment
//!   matched case-insensitively, since the guide's curl writes `Training`),
//!   the `Training-Key` header, the JSON shapes of `Project`, `Iteration`,
//!   `Export`, and errors as `CustomVisionError` `{code, message}` with
//!   codes from the spec's list.
//! - Toward storage, as the guide says the service does with its managed
//!   identity: when a project's `notificationQueueUri` /
//!   `exportModelContainerUri` are set it writes a `ConnectionTest` message
//!   into the queue and a temporary blob under `CustomVision-TestPermission/`
//!   into the container; after ExportIteration it writes the backup blob
//!   `{projectId} - {iterationId}.{platform}` and an `Export` message whose
//!   `modelUri` is that blob, after a short delay. It writes into real
//!   Azurite with the development account key (standing in for the managed
//!   identity's roles); with `storage_roles = false` it writes nothing, as
//!   the service cannot without the roles.
//!
//! What it assumes, where the reference is silent (each one is marked
//! "assumed" below): which way of setting the storage URIs sticks
//! ([`Forms`], configurable for that reason); the gateway's 401 body for a
//! wrong key (`{"error": {"code": "401", ...}}`, the shape Azure AI services
//! use); the codes for "already exported" and "publish name in use"; the
//! name of the test blob; HTTP statuses per code (400/403/404 from the code
//! names); what PublishIteration does with `overwrite=true` ([`Overwrite`]:
//! the spec documents the parameter, "Whether to overwrite the published
//! model with the given name", not its effect; by default the name moves
//! from the iteration holding it, and the other modes are what a service
//! refusing or ignoring it would do). Scripted faults ([`Fault`]) give 429s
//! with `Retry-After` and the like.

use super::Queue as _;
use super::{blob_client, queue_client};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use url::Url;
use uuid::Uuid;

/// Which of the documented ways of setting the storage URIs the stand-in
/// honours (assumed: the reference cannot say which the v3.3 service does).
#[derive(Clone, Copy, Debug)]
pub struct Forms {
    /// UpdateProject with the URIs inside `settings` (the storage guide).
    pub update_body: bool,
    /// UpdateProject with the URIs as query parameters (not documented for
    /// UpdateProject; cvnotify's fallback).
    pub update_query: bool,
    /// CreateProject with the URIs as query parameters (the storage guide).
    pub create_query: bool,
    /// CreateProject with a `CreateProjectOptions` body (v3.4-preview SDK).
    pub create_body: bool,
}

/// What PublishIteration does with `overwrite=true` (assumed: the spec
/// documents the parameter, not its effect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// The name moves from the iteration holding it to this one, in one
    /// step (how the spec's description reads).
    Honoured,
    /// 400 `BadRequest` naming the parameter (a service that does not take
    /// it).
    Rejected,
    /// Ignored: a name another iteration holds is refused as without it.
    Ignored,
    /// Answers `true` and changes nothing: the name stays where it was.
    TrueButUnchanged,
}

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct CvOptions {
    /// The training key it accepts.
    pub key: String,
    /// Whether its managed identity holds the storage roles: without them
    /// the settings are accepted but nothing is ever written to storage.
    pub storage_roles: bool,
    pub forms: Forms,
    /// From ExportIteration to the backup blob and `Export` message.
    pub export_delay: Duration,
    /// How long the `CustomVision-TestPermission/` blob exists.
    pub test_blob_lifetime: Duration,
    /// PublishIteration's `overwrite=true`.
    pub overwrite: Overwrite,
    /// A hostile (or careless) service: every error answer's message ends
    /// with ` (Training-Key: <the key the request carried>)`.
    pub echo_key: bool,
}

impl Default for CvOptions {
    fn default() -> Self {
        CvOptions {
            key: "test-training-key-0123456789abcdef".into(),
            storage_roles: true,
            forms: Forms {
                update_body: true,
                update_query: false,
                create_query: true,
                create_body: false,
            },
            export_delay: Duration::from_millis(300),
            test_blob_lifetime: Duration::from_secs(5),
            overwrite: Overwrite::Honoured,
            echo_key: false,
        }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path after `/customvision/v3.3/training`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub at: SystemTime,
}

/// A scripted answer for the next `times` requests whose method matches
/// and whose path contains `path_contains`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub times: u32,
}

/// What the stand-in wrote to storage, and when. Tests read `kind` and
/// `at`; the rest is there for the failure messages that print it.
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct Written {
    pub kind: &'static str,
    pub project: Uuid,
    pub iteration: Option<Uuid>,
    /// Queue message body or blob URL.
    pub what: String,
    pub at: SystemTime,
}

struct IterationState {
    project: Uuid,
    json: Value,
    /// Platforms the project's domain can export to (advertised in
    /// `exportableTo` or not).
    supported: Vec<String>,
    exports: Vec<Value>,
}

#[derive(Default)]
struct State {
    projects: HashMap<Uuid, Value>,
    iterations: HashMap<Uuid, IterationState>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    written: Vec<Written>,
    /// After each publish or unpublish: the publish name it concerned and
    /// the iterations holding that name then.
    holders: Vec<(String, Vec<Uuid>)>,
}

/// The running stand-in; stopped when dropped.
pub struct CustomVision {
    pub addr: SocketAddr,
    pub options: CvOptions,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CustomVision {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    (status, Some(json!({"code": code, "message": message})))
}

/// The export platforms of v3.3 and their flavors (spec §4).
fn valid_flavor(platform: &str, flavor: Option<&str>) -> Option<bool> {
    let flavors: &[&str] = match platform {
        "CoreML" | "VAIDK" => &[],
        "TensorFlow" => &["TensorFlowNormal", "TensorFlowLite"],
        "DockerFile" => &["Linux", "Windows", "ARM"],
        "ONNX" => &["ONNX10", "ONNX12"],
        _ => return None,
    };
    Some(flavor.is_none_or(|f| flavors.contains(&f)))
}

impl CustomVision {
    pub async fn start(options: CvOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (s, o) = (state.clone(), Arc::new(options.clone()));
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, o) = (s.clone(), o.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (s, o) = (s.clone(), o.clone());
                        async move { Ok::<_, Infallible>(handle(&s, &o, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CustomVision {
            addr,
            options,
            state,
            server,
        }
    }

    /// `[customvision] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `[customvision]` section for this stand-in, with `extra` keys.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "\n[customvision]\nendpoint = \"{}\"\ntraining_key = \"{}\"\nmax_attempts = 3\n{extra}\n",
            self.endpoint(),
            self.options.key
        )
    }

    /// Creates a project as the portal would (no storage settings).
    pub fn add_project(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.state
            .lock()
            .unwrap()
            .projects
            .insert(id, new_project(id, name));
        id
    }

    /// A trained iteration of `project` that can be exported to
    /// `supported`; `advertised`: whether GetIteration lists them in
    /// `exportableTo` (else the field is absent and only ExportIteration
    /// says no).
    pub fn add_iteration(&self, project: Uuid, supported: &[&str], advertised: bool) -> Uuid {
        let id = Uuid::new_v4();
        let mut json = json!({
            "id": id, "name": format!("Iteration {}", &id.simple().to_string()[..6]),
            "status": "Completed", "created": now_rfc3339(), "lastModified": now_rfc3339(),
            "trainedAt": now_rfc3339(), "projectId": project,
            "exportable": !supported.is_empty(), "domainId": null, "classificationType": null,
            "trainingType": "Regular", "reservedBudgetInHours": 0, "trainingTimeInMinutes": 1,
            "publishName": null, "originalPublishResourceId": null,
        });
        if advertised {
            json["exportableTo"] = json!(supported);
        }
        self.state.lock().unwrap().iterations.insert(
            id,
            IterationState {
                project,
                json,
                supported: supported.iter().map(|s| s.to_string()).collect(),
                exports: Vec::new(),
            },
        );
        id
    }

    /// Sets a project's storage URIs as if done earlier (no connection
    /// test is written).
    pub fn set_storage(&self, project: Uuid, queue: &str, container: Option<&str>) {
        let mut st = self.state.lock().unwrap();
        let settings = &mut st.projects.get_mut(&project).unwrap()["settings"];
        settings["notificationQueueUri"] = json!(queue);
        if let Some(c) = container {
            settings["exportModelContainerUri"] = json!(c);
        }
    }

    /// Marks `iteration` as published under `name` (as if done earlier).
    pub fn set_published(&self, iteration: Uuid, name: &str) {
        let mut st = self.state.lock().unwrap();
        let it = &mut st.iterations.get_mut(&iteration).unwrap().json;
        it["publishName"] = json!(name);
        it["originalPublishResourceId"] = json!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/pred"
        );
    }

    pub fn project(&self, id: Uuid) -> Value {
        self.state.lock().unwrap().projects[&id].clone()
    }

    pub fn iteration(&self, id: Uuid) -> Value {
        self.state.lock().unwrap().iterations[&id].json.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests with `method` whose path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .count()
    }

    /// What it wrote to storage so far.
    pub fn written(&self) -> Vec<Written> {
        self.state.lock().unwrap().written.clone()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    /// The iterations holding publish name `name` after each publish or
    /// unpublish that changed who holds it (an empty entry: a moment
    /// in which the name answered no predictions).
    pub fn holders_of(&self, name: &str) -> Vec<Vec<Uuid>> {
        self.state
            .lock()
            .unwrap()
            .holders
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, h)| h.clone())
            .collect()
    }
}

/// Records who holds `name` now (see [`CustomVision::holders_of`]).
fn record_holders(st: &mut State, project: Uuid, name: &str) {
    let mut holders: Vec<Uuid> = st
        .iterations
        .iter()
        .filter(|(_, it)| it.project == project && it.json["publishName"] == json!(name))
        .map(|(id, _)| *id)
        .collect();
    holders.sort();
    st.holders.push((name.to_owned(), holders));
}

fn new_project(id: Uuid, name: &str) -> Value {
    json!({
        "id": id, "name": name, "description": "",
        "settings": {
            "domainId": "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31", "classificationType": "Multiclass",
            "targetExportPlatforms": [], "useNegativeSet": true, "detectionParameters": null,
            "imageProcessingSettings": {"augmentationMethods": {}}
        },
        "created": now_rfc3339(), "lastModified": now_rfc3339(), "thumbnailUri": null,
        "drModeEnabled": false, "status": "Succeeded"
    })
}

fn respond(
    status: u16,
    body: Option<Value>,
    headers: &[(String, String)],
) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap(),
        None => b.body(Full::new(Bytes::new())).unwrap(),
    }
}

/// With [`CvOptions::echo_key`], the key the request carried appended to
/// an error answer's message (`{message}` or `{error: {message}}`).
fn echo_key(status: u16, body: Option<Value>, key: &str) -> Option<Value> {
    let mut body = body?;
    if status >= 400 {
        let echo = |m: &mut Value| {
            if let Some(text) = m.as_str() {
                *m = json!(format!("{text} (Training-Key: {key})"));
            }
        };
        if let Some(m) = body.get_mut("message") {
            echo(m);
        } else if let Some(m) = body.get_mut("error").and_then(|e| e.get_mut("message")) {
            echo(m);
        }
    }
    Some(body)
}

async fn handle(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let received = req
        .headers()
        .get("training-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, body, headers) = answer(state, o, req).await;
    let body = match o.echo_key {
        true => echo_key(status, body, &received),
        false => body,
    };
    respond(status, body, &headers)
}

/// The status, JSON body and headers of the answer to `req`.
async fn answer(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    req: Request<hyper::body::Incoming>,
) -> (u16, Option<Value>, Vec<(String, String)>) {
    let method = req.method().clone();
    let full_path = req.uri().path().to_owned();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let key_ok = req
        .headers()
        .get("training-key")
        .and_then(|v| v.to_str().ok())
        == Some(o.key.as_str());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let lower = full_path.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("/customvision/v3.3/training")
        .map(|r| full_path[full_path.len() - r.len()..].to_owned())
    else {
        return (
            404,
            Some(json!({"code": "NotFound", "message": "Resource not found"})),
            Vec::new(),
        );
    };
    let fault = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            method: method.to_string(),
            path: rest.clone(),
            query: query.clone(),
            at: SystemTime::now(),
        });
        let pos = st
            .faults
            .iter()
            .position(|f| f.method == method.as_str() && rest.contains(&f.path_contains));
        pos.map(|i| {
            let f = st.faults[i].clone();
            if f.times <= 1 {
                st.faults.remove(i);
            } else {
                st.faults[i].times -= 1;
            }
            f
        })
    };
    if let Some(f) = fault {
        let body =
            (!f.body.is_empty()).then(|| serde_json::from_str(&f.body).unwrap_or(json!(f.body)));
        return (f.status, body, f.headers);
    }
    if !key_ok {
        // Assumed: the Azure AI services gateway's answer to a wrong key.
        return (
            401,
            Some(
                json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
            ),
            Vec::new(),
        );
    }
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (status, value) = route(state, o, &method, &segments, &q, &body);
    (status, value, Vec::new())
}

type Answer = (u16, Option<Value>);

/// A request's query parameters, by name.
type Query<'a> = &'a dyn Fn(&str) -> Option<String>;

fn route(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    method: &Method,
    seg: &[&str],
    q: Query<'_>,
    body: &[u8],
) -> Answer {
    let id = |s: &str| s.parse::<Uuid>().ok();
    match (method.as_str(), seg) {
        ("POST", ["projects"]) => create_project(state, o, q, body),
        (m, ["projects", p]) => {
            let Some(p) = id(p) else {
                return error(400, "BadRequestInvalidIds", "Invalid project id");
            };
            match m {
                "GET" => match state.lock().unwrap().projects.get(&p) {
                    Some(v) => (200, Some(v.clone())),
                    None => error(404, "NotFoundProject", "Invalid project"),
                },
                "PATCH" => update_project(state, o, p, q, body),
                _ => error(405, "BadRequest", "Method not allowed"),
            }
        }
        ("GET", ["projects", p, "iterations"]) => {
            let Some(p) = id(p) else {
                return error(400, "BadRequestInvalidIds", "Invalid project id");
            };
            let st = state.lock().unwrap();
            if !st.projects.contains_key(&p) {
                return error(404, "NotFoundProject", "Invalid project");
            }
            let list: Vec<Value> = st
                .iterations
                .values()
                .filter(|i| i.project == p)
                .map(|i| i.json.clone())
                .collect();
            (200, Some(Value::Array(list)))
        }
        (m, ["projects", p, "iterations", i, tail @ ..]) => {
            let (Some(p), Some(i)) = (id(p), id(i)) else {
                return error(400, "BadRequestInvalidIds", "Invalid id");
            };
            {
                let st = state.lock().unwrap();
                if !st.projects.contains_key(&p) {
                    return error(404, "NotFoundProject", "Invalid project");
                }
                if st.iterations.get(&i).is_none_or(|it| it.project != p) {
                    return error(404, "NotFoundIteration", "Invalid iteration");
                }
            }
            match (m, tail) {
                ("GET", []) => (200, Some(state.lock().unwrap().iterations[&i].json.clone())),
                ("GET", ["export"]) => (
                    200,
                    Some(Value::Array(
                        state.lock().unwrap().iterations[&i].exports.clone(),
                    )),
                ),
                ("POST", ["export"]) => export(state, o, p, i, q),
                ("POST", ["publish"]) => publish(state, o, p, i, q),
                ("DELETE", ["publish"]) => {
                    let mut st = state.lock().unwrap();
                    let it = &mut st.iterations.get_mut(&i).unwrap().json;
                    let Some(name) = it["publishName"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                    else {
                        return error(
                            400,
                            "BadRequestIterationNotPublished",
                            "Iteration is not published",
                        );
                    };
                    it["publishName"] = Value::Null;
                    it["originalPublishResourceId"] = Value::Null;
                    record_holders(&mut st, p, &name);
                    (204, None)
                }
                _ => error(404, "NotFound", "Resource not found"),
            }
        }
        _ => error(404, "NotFound", "Resource not found"),
    }
}

/// (notification queue URI, export container URI) of a request.
type Uris = (Option<String>, Option<String>);

/// The two storage URIs of one form of a request (its query or its body),
/// read through `get`.
fn storage_uris_from(get: Query<'_>) -> Uris {
    (get("notificationQueueUri"), get("exportModelContainerUri"))
}

fn str_at(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// Each URI from the first honoured form that carries it (the service's
/// order differs between create and update).
fn first_of(first: Option<Uris>, second: Option<Uris>) -> Uris {
    let (a, b) = first.unwrap_or_default();
    let (c, d) = second.unwrap_or_default();
    (a.or(c), b.or(d))
}

fn create_project(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    q: Query<'_>,
    body: &[u8],
) -> Answer {
    let Some(name) = q("name").filter(|n| !n.is_empty()) else {
        return error(400, "BadRequestProjectName", "Name is required");
    };
    if state
        .lock()
        .unwrap()
        .projects
        .values()
        .any(|p| p["name"] == json!(name))
    {
        return error(400, "BadRequestProjectNameNotUnique", "Name not unique");
    }
    let id = Uuid::new_v4();
    let project = new_project(id, &name);
    let body = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let uris = first_of(
        o.forms.create_query.then(|| storage_uris_from(&|k| q(k))),
        o.forms
            .create_body
            .then(|| storage_uris_from(&|k| str_at(&body, k))),
    );
    store_project(state, o, id, project, uris)
}

fn update_project(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    id: Uuid,
    q: Query<'_>,
    body: &[u8],
) -> Answer {
    let Some(mut project) = state.lock().unwrap().projects.get(&id).cloned() else {
        return error(404, "NotFoundProject", "Invalid project");
    };
    let Ok(update) = serde_json::from_slice::<Value>(body) else {
        return error(400, "BadRequestInvalid", "The body is not a Project");
    };
    // The spec's required fields of Project.
    if update.get("name").and_then(Value::as_str).is_none() || !update["settings"].is_object() {
        return error(
            400,
            "BadRequestRequiredParamIsNull",
            "name and settings are required",
        );
    }
    project["name"] = update["name"].clone();
    project["description"] = update.get("description").cloned().unwrap_or(Value::Null);
    for k in [
        "domainId",
        "classificationType",
        "targetExportPlatforms",
        "imageProcessingSettings",
    ] {
        if let Some(v) = update["settings"].get(k) {
            project["settings"][k] = v.clone();
        }
    }
    let uris = first_of(
        o.forms
            .update_body
            .then(|| storage_uris_from(&|k| str_at(&update["settings"], k))),
        o.forms.update_query.then(|| storage_uris_from(&|k| q(k))),
    );
    project["lastModified"] = json!(now_rfc3339());
    store_project(state, o, id, project, uris)
}

/// Honours the storage URIs of a create or update, stores the project and
/// answers with it.
fn store_project(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    id: Uuid,
    mut project: Value,
    uris: Uris,
) -> Answer {
    apply_storage(state, o, id, &mut project, uris);
    state.lock().unwrap().projects.insert(id, project.clone());
    (200, Some(project))
}

/// Stores the URIs that were honoured and, as the service does, proves the
/// connection: a `ConnectionTest` message and a temporary test blob.
fn apply_storage(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    project_id: Uuid,
    project: &mut Value,
    (queue, container): (Option<String>, Option<String>),
) {
    if queue.is_none() && container.is_none() {
        return;
    }
    if let Some(q) = &queue {
        project["settings"]["notificationQueueUri"] = json!(q);
    }
    if let Some(c) = &container {
        project["settings"]["exportModelContainerUri"] = json!(c);
    }
    if !o.storage_roles {
        return;
    }
    let (state, o) = (state.clone(), o.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(q) = queue {
            let body = json!({"version": "1.0", "type": "ConnectionTest", "Content": {"projectId": project_id}}).to_string();
            send_message(&q, &body).await;
            record(&state, "ConnectionTest", project_id, None, body);
        }
        if let Some(c) = container {
            // Assumed name: the guide names only the folder.
            let url = blob_url(
                &c,
                &format!("CustomVision-TestPermission/{}", Uuid::new_v4()),
            );
            upload(&url, b"connection test".to_vec()).await;
            record(&state, "TestBlob", project_id, None, url.to_string());
            tokio::time::sleep(o.test_blob_lifetime).await;
            let _ = blob_client(&url).delete(None).await;
        }
    });
}

fn record(
    state: &Arc<Mutex<State>>,
    kind: &'static str,
    project: Uuid,
    iteration: Option<Uuid>,
    what: String,
) {
    state.lock().unwrap().written.push(Written {
        kind,
        project,
        iteration,
        what,
        at: SystemTime::now(),
    });
}

fn export(state: &Arc<Mutex<State>>, o: &Arc<CvOptions>, p: Uuid, i: Uuid, q: Query<'_>) -> Answer {
    let Some(platform) = q("platform") else {
        return error(400, "BadRequestRequiredParamIsNull", "platform is required");
    };
    let flavor = q("flavor");
    match valid_flavor(&platform, flavor.as_deref()) {
        None => {
            return error(
                400,
                "BadRequestExportValidationFailed",
                "Invalid export platform",
            );
        }
        Some(false) => {
            return error(
                400,
                "BadRequestExportValidationFailed",
                "Invalid flavor for this platform",
            );
        }
        Some(true) => {}
    }
    let mut st = state.lock().unwrap();
    let container = st.projects[&p]["settings"]["exportModelContainerUri"]
        .as_str()
        .map(str::to_owned);
    let queue = st.projects[&p]["settings"]["notificationQueueUri"]
        .as_str()
        .map(str::to_owned);
    let it = st.iterations.get_mut(&i).unwrap();
    if !it.supported.contains(&platform) {
        return error(
            400,
            "BadRequestProjectUnsupportedExportPlatform",
            "The project does not support this export platform",
        );
    }
    let same =
        |e: &Value| e["platform"] == json!(platform) && e["flavor"].as_str() == flavor.as_deref();
    if let Some(e) = it.exports.iter().find(|e| same(e)) {
        return if e["status"] == "Exporting" {
            error(
                400,
                "BadRequestExportAlreadyInProgress",
                "Export already in progress",
            )
        } else {
            // Assumed code: the docs say only that it "cannot" be exported again.
            error(
                400,
                "BadRequestExportValidationFailed",
                "The iteration has already been exported to this platform",
            )
        };
    }
    let record_json = json!({"platform": platform, "flavor": flavor, "status": "Exporting", "downloadUri": "", "newerVersionAvailable": false});
    it.exports.push(record_json.clone());
    drop(st);
    let (state, o2) = (state.clone(), o.clone());
    tokio::spawn(async move {
        tokio::time::sleep(o2.export_delay).await;
        let name = format!("{p} - {i}.{platform}");
        let model_url = match &container {
            Some(c) => blob_url(c, &name),
            None => Url::parse(&format!("https://irisprodstore.blob.core.windows.net/m-{}/{}.{platform}.zip?sv=2020-08-04&sr=b&sig=standin&sp=r", p.simple(), i.simple())).unwrap(),
        };
        if o2.storage_roles && container.is_some() {
            upload(&model_url, format!("model {platform} of {i}").into_bytes()).await;
            record(&state, "Backup", p, Some(i), model_url.to_string());
        }
        {
            let mut st = state.lock().unwrap();
            if let Some(e) = st.iterations.get_mut(&i).and_then(|it| {
                it.exports
                    .iter_mut()
                    .find(|e| same_export(e, &platform, flavor.as_deref()))
            }) {
                e["status"] = json!("Done");
                e["downloadUri"] = json!(model_url.as_str());
            }
        }
        if o2.storage_roles
            && let Some(q) = queue
        {
            let body = json!({"version": "1.0", "type": "Export", "Content": {
                "projectId": p, "iterationId": i, "exportStatus": "ExportCompleted", "modelUri": model_url.as_str()}})
            .to_string();
            send_message(&q, &body).await;
            record(&state, "Export", p, Some(i), body);
        }
    });
    (200, Some(record_json))
}

fn same_export(e: &Value, platform: &str, flavor: Option<&str>) -> bool {
    e["platform"] == json!(platform) && e["flavor"].as_str() == flavor
}

fn publish(
    state: &Arc<Mutex<State>>,
    o: &Arc<CvOptions>,
    p: Uuid,
    i: Uuid,
    q: Query<'_>,
) -> Answer {
    let (Some(name), Some(prediction)) = (q("publishName"), q("predictionId")) else {
        return error(
            400,
            "BadRequestRequiredParamIsNull",
            "publishName and predictionId are required",
        );
    };
    if !prediction.starts_with("/subscriptions/") {
        return error(
            400,
            "BadRequestInvalidPublishTarget",
            "Invalid prediction resource id",
        );
    }
    // The spec: `overwrite` bool, optional, default false.
    let overwrite = match q("overwrite").as_deref() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return error(400, "BadRequestInvalid", "overwrite must be a boolean");
        }
    };
    if overwrite && o.overwrite == Overwrite::Rejected {
        return error(
            400,
            "BadRequest",
            "The query parameter 'overwrite' is not supported",
        );
    }
    if overwrite && o.overwrite == Overwrite::TrueButUnchanged {
        return (200, Some(json!(true)));
    }
    let overwrite = overwrite && o.overwrite == Overwrite::Honoured;
    let mut st = state.lock().unwrap();
    if st.iterations[&i].json["publishName"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
    {
        return error(
            400,
            "BadRequestIterationIsPublished",
            "Iteration is already published",
        );
    }
    let held_by: Vec<Uuid> = st
        .iterations
        .iter()
        .filter(|(id, it)| **id != i && it.project == p && it.json["publishName"] == json!(name))
        .map(|(id, _)| *id)
        .collect();
    if overwrite {
        // Assumed effect: the name leaves its holder in the same step.
        for h in held_by {
            let it = &mut st.iterations.get_mut(&h).unwrap().json;
            it["publishName"] = Value::Null;
            it["originalPublishResourceId"] = Value::Null;
        }
    } else if !held_by.is_empty() {
        // Assumed code for a name another iteration holds.
        return error(
            400,
            "BadRequestInvalidPublishName",
            "The publish name is already in use",
        );
    }
    let it = &mut st.iterations.get_mut(&i).unwrap().json;
    it["publishName"] = json!(name);
    it["originalPublishResourceId"] = json!(prediction);
    record_holders(&mut st, p, &name);
    (200, Some(json!(true)))
}

/// `container` URL plus a blob name (spaces encoded as the service does).
fn blob_url(container: &str, name: &str) -> Url {
    let mut u = Url::parse(container).unwrap();
    {
        let mut s = u.path_segments_mut().unwrap();
        s.pop_if_empty();
        for part in name.split('/') {
            s.push(part);
        }
    }
    u
}

async fn upload(url: &Url, bytes: Vec<u8>) {
    if let Err(e) = blob_client(url)
        .upload(azure_core::http::RequestContent::from(bytes), None)
        .await
    {
        eprintln!("stand-in: cannot write blob {url}: {e}");
    }
}

/// Sends `body` to the queue at `queue_url` (an Azurite queue URL).
async fn send_message(queue_url: &str, body: &str) {
    let u = Url::parse(queue_url).unwrap();
    let name = u.path_segments().unwrap().next_back().unwrap().to_owned();
    let endpoint = queue_url.trim_end_matches(&format!("/{name}")).to_owned();
    let config = format!(
        "[queue]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n"
    );
    if let Err(e) = queue_client(&config, &name)
        .send(body, super::Expiry::ServiceDefault)
        .await
    {
        eprintln!("stand-in: cannot write to queue {queue_url}: {e}");
    }
}

/// What handlers are built with for `config`: anonymous blob access, and
/// the Training API client of its `[customvision]` section.
pub fn handler_ctx(config: &super::Config) -> super::BuildContext {
    let cv = config
        .customvision
        .as_ref()
        .expect("a [customvision] section");
    super::BuildContext {
        customvision: Some(Arc::new(
            super::TrainingClient::from_config(cv, &config.auth, config.queue.cloud, &config.tls)
                .unwrap(),
        )),
        ..super::anonymous_ctx()
    }
}
