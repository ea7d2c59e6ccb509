//! BENCHMARK FIXTURE, NOT A STORAGE EMULATOR: an in-memory HTTP endpoint
//! that implements only the Queue REST calls cvnotify and the raw ceiling
//! use (put, get with visibility timeout and dequeue count, update, delete,
//! get properties, create), so that `scripts/bench` can measure the daemon's
//! own ceiling, which Azurite is too slow to show. It checks no
//! authentication and keeps nothing on disk. Tests always use Azurite.
//!
//! `cargo run --release --example fast_queue` prints `LISTENING <port>`.
//! Bench control: `POST /_bench/fill?queue=Q&n=N` (body = message text),
//! `GET /_bench/stats?queue=Q` (JSON: requests by operation, the Unix time
//! in ns of the first receive, remaining messages).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Msg {
    text: Arc<str>,
    dequeue: u32,
    receipt: u64,
    visible_at: Instant,
}

#[derive(Default)]
struct Queue {
    messages: HashMap<u64, Msg>,
    ready: VecDeque<u64>,
    /// (Reverse(visible_at), id): invisible messages by when they return.
    hidden: BinaryHeap<(std::cmp::Reverse<Instant>, u64)>,
    requests: HashMap<&'static str, u64>,
    first_receive_ns: Option<u128>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    next: u64,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn query(req: &Request<hyper::body::Incoming>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: String) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header("x-ms-version", "2026-04-06");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

impl Queue {
    fn count(&mut self, op: &'static str) {
        *self.requests.entry(op).or_insert(0) += 1;
    }

    fn surface(&mut self, now: Instant) {
        while let Some((std::cmp::Reverse(at), id)) = self.hidden.peek().copied() {
            if at > now {
                break;
            }
            self.hidden.pop();
            if let Some(m) = self.messages.get(&id)
                && m.visible_at <= now
            {
                self.ready.push_back(id);
            }
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments.first() == Some(&"_bench") {
        let q = query(&req, "queue").unwrap_or_default();
        if segments.get(1) == Some(&"fill") {
            let n: u64 = query(&req, "n").and_then(|v| v.parse().ok()).unwrap_or(0);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text: Arc<str> = Arc::from(String::from_utf8_lossy(&body).into_owned());
            let mut st = state.lock().unwrap();
            let start = st.next;
            st.next += n;
            let queue = st.queues.entry(q).or_default();
            let now = Instant::now();
            for id in start..start + n {
                queue.messages.insert(
                    id,
                    Msg {
                        text: text.clone(),
                        dequeue: 0,
                        receipt: 0,
                        visible_at: now,
                    },
                );
                queue.ready.push_back(id);
            }
            return Ok(respond(StatusCode::OK, &[], "{}".into()));
        }
        let st = state.lock().unwrap();
        let body = match st.queues.get(&q) {
            Some(queue) => serde_json::json!({
                "requests": queue.requests,
                "first_receive_ns": queue.first_receive_ns.map(|n| n.to_string()),
                "remaining": queue.messages.len(),
            }),
            None => serde_json::json!({"requests": {}, "first_receive_ns": null, "remaining": 0}),
        };
        return Ok(respond(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            body.to_string(),
        ));
    }
    // /{account}/{queue}[/messages[/{id}]]
    let Some(qname) = segments.get(1).map(|s| s.to_string()) else {
        return Ok(respond(StatusCode::BAD_REQUEST, &[], String::new()));
    };
    let sub = segments.get(2).copied();
    let msg_id = segments.get(3).and_then(|s| s.parse::<u64>().ok());
    let body = if method == Method::POST {
        req.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    } else {
        let params = (
            query(&req, "numofmessages"),
            query(&req, "visibilitytimeout"),
            query(&req, "popreceipt"),
            query(&req, "comp"),
            query(&req, "peekonly"),
        );
        return Ok(handle_query(&state, &method, &qname, sub, msg_id, params));
    };
    let text = String::from_utf8_lossy(&body);
    let inner = text
        .split("<MessageText>")
        .nth(1)
        .and_then(|r| r.split("</MessageText>").next())
        .map(xml_unescape)
        .unwrap_or_default();
    let mut st = state.lock().unwrap();
    let id = st.next;
    st.next += 1;
    let queue = st.queues.entry(qname).or_default();
    queue.count("put");
    let now = Instant::now();
    queue.messages.insert(
        id,
        Msg {
            text: Arc::from(inner),
            dequeue: 0,
            receipt: 1,
            visible_at: now,
        },
    );
    queue.ready.push_back(id);
    let t = http_date(SystemTime::now());
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage><MessageId>{id}</MessageId><InsertionTime>{t}</InsertionTime><ExpirationTime>{t}</ExpirationTime><PopReceipt>1</PopReceipt><TimeNextVisible>{t}</TimeNextVisible></QueueMessage></QueueMessagesList>"
    );
    Ok(respond(
        StatusCode::CREATED,
        &[("content-type", "application/xml".into())],
        body,
    ))
}

type Params = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn handle_query(
    state: &Mutex<State>,
    method: &Method,
    qname: &str,
    sub: Option<&str>,
    msg_id: Option<u64>,
    (num, vis, receipt, comp, _peek): Params,
) -> Response<Full<Bytes>> {
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    let queue = st.queues.entry(qname.to_owned()).or_default();
    let now = Instant::now();
    match (method, sub, msg_id) {
        (&Method::PUT, None, None) => {
            queue.count("create");
            respond(StatusCode::CREATED, &[], String::new())
        }
        (&Method::GET, None, None) if comp.as_deref() == Some("metadata") => {
            queue.count("properties");
            respond(
                StatusCode::OK,
                &[(
                    "x-ms-approximate-messages-count",
                    queue.messages.len().to_string(),
                )],
                String::new(),
            )
        }
        (&Method::GET, Some("messages"), None) => {
            queue.count("receive");
            queue.first_receive_ns.get_or_insert_with(now_ns);
            queue.surface(now);
            let n: usize = num.and_then(|v| v.parse().ok()).unwrap_or(1).clamp(1, 32);
            let vis = Duration::from_secs(vis.and_then(|v| v.parse().ok()).unwrap_or(30));
            let mut out =
                String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList>");
            let t = http_date(SystemTime::now());
            let tv = http_date(SystemTime::now() + vis);
            let mut taken = 0;
            while taken < n {
                let Some(id) = queue.ready.pop_front() else {
                    break;
                };
                let Some(m) = queue.messages.get_mut(&id) else {
                    continue;
                };
                if m.visible_at > now {
                    continue;
                }
                m.dequeue += 1;
                m.receipt += 1;
                m.visible_at = now + vis;
                queue.hidden.push((std::cmp::Reverse(m.visible_at), id));
                out.push_str(&format!(
                    "<QueueMessage><MessageId>{id}</MessageId><InsertionTime>{t}</InsertionTime><ExpirationTime>{t}</ExpirationTime><PopReceipt>{}</PopReceipt><TimeNextVisible>{tv}</TimeNextVisible><DequeueCount>{}</DequeueCount><MessageText>{}</MessageText></QueueMessage>",
                    m.receipt,
                    m.dequeue,
                    xml_escape(&m.text)
                ));
                taken += 1;
            }
            out.push_str("</QueueMessagesList>");
            respond(
                StatusCode::OK,
                &[("content-type", "application/xml".into())],
                out,
            )
        }
        (&Method::DELETE, Some("messages"), Some(id)) => {
            queue.count("delete");
            let ok = queue
                .messages
                .get(&id)
                .is_some_and(|m| Some(m.receipt.to_string()) == receipt);
            if ok {
                queue.messages.remove(&id);
                respond(StatusCode::NO_CONTENT, &[], String::new())
            } else {
                respond(
                    StatusCode::NOT_FOUND,
                    &[("x-ms-error-code", "MessageNotFound".into())],
                    String::new(),
                )
            }
        }
        (&Method::PUT, Some("messages"), Some(id)) => {
            queue.count("update");
            let vis = Duration::from_secs(vis.and_then(|v| v.parse().ok()).unwrap_or(0));
            match queue.messages.get_mut(&id) {
                Some(m) if Some(m.receipt.to_string()) == receipt => {
                    m.receipt += 1;
                    m.visible_at = now + vis;
                    let r = m.receipt.to_string();
                    queue.hidden.push((std::cmp::Reverse(now + vis), id));
                    respond(
                        StatusCode::NO_CONTENT,
                        &[
                            ("x-ms-popreceipt", r),
                            ("x-ms-time-next-visible", http_date(SystemTime::now() + vis)),
                        ],
                        String::new(),
                    )
                }
                _ => respond(
                    StatusCode::NOT_FOUND,
                    &[("x-ms-error-code", "MessageNotFound".into())],
                    String::new(),
                ),
            }
        }
        _ => respond(StatusCode::BAD_REQUEST, &[], String::new()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap().port());
    let state = Arc::new(Mutex::new(State::default()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
