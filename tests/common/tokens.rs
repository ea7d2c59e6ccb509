//! A local token service speaking the two protocols cvnotify's credentials
//! use: the App Service managed identity endpoint (`IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER`) and the Entra ID token endpoint of workload identity
//! (`{authority}/{tenant}/oauth2/v2.0/token` with a client assertion). It
//! issues JWTs with the issuer and audience Azurite checks in `--oauth
//! basic` mode (which does not verify signatures), short lifetimes, and
//! records every request. It can be turned "down" (connections closed
//! without an answer).

use base64::Engine as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const IDENTITY_HEADER: &str = "test-identity-header";

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub path: String,
    /// `client_id` of the request (query for managed identity, form field
    /// for workload identity).
    pub client_id: Option<String>,
    /// The federated token sent as client assertion (workload identity).
    pub assertion: Option<String>,
    pub at: SystemTime,
}

pub struct TokenService {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
    pub down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT Azurite accepts: storage audience, an sts.windows.net issuer.
pub fn jwt(lifetime: Duration) -> (String, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = now + lifetime.as_secs();
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = b64url(
        serde_json::json!({
            "aud": "https://storage.azure.com",
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now - 1,
            "nbf": now - 1,
            "exp": exp,
            "oid": "11111111-2222-3333-4444-555555555555",
            "tid": TENANT,
        })
        .to_string()
        .as_bytes(),
    );
    (
        format!("{header}.{payload}.{}", b64url(b"not-verified-by-azurite")),
        exp,
    )
}

impl TokenService {
    /// Plain HTTP (managed identity) when `tls` is None, HTTPS otherwise.
    pub async fn start(lifetime: Duration, tls: Option<&super::tls::Pki>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let acceptor = tls.map(|p| tokio_rustls::TlsAcceptor::from(Arc::new(p.server_config())));
        let (reqs, dn) = (requests.clone(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if dn.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                let reqs = reqs.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                serve(s, &reqs, lifetime).await;
                            }
                        }
                        None => serve(tcp, &reqs, lifetime).await,
                    }
                });
            }
        });
        TokenService {
            port,
            requests,
            down,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn form_or_query(s: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(s.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    reqs: &Mutex<Vec<TokenRequest>>,
    lifetime: Duration,
) {
    let Some((head, body)) = super::read_http_request(&mut s).await else {
        return;
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let (status, json) = if path.ends_with("/oauth2/v2.0/token") {
        let assertion = form_or_query(&body, "client_assertion");
        reqs.lock().unwrap().push(TokenRequest {
            path: path.to_owned(),
            client_id: form_or_query(&body, "client_id"),
            assertion: assertion.clone(),
            at: SystemTime::now(),
        });
        if assertion.is_none_or(|a| a.is_empty()) {
            (
                "400 Bad Request",
                serde_json::json!({"error": "invalid_client"}),
            )
        } else {
            let (token, _) = jwt(lifetime);
            (
                "200 OK",
                serde_json::json!({"token_type": "Bearer", "expires_in": lifetime.as_secs(), "ext_expires_in": lifetime.as_secs(), "access_token": token}),
            )
        }
    } else {
        reqs.lock().unwrap().push(TokenRequest {
            path: path.to_owned(),
            client_id: form_or_query(query, "client_id"),
            assertion: None,
            at: SystemTime::now(),
        });
        if header("x-identity-header").as_deref() != Some(IDENTITY_HEADER) {
            (
                "401 Unauthorized",
                serde_json::json!({"error": "missing X-IDENTITY-HEADER"}),
            )
        } else {
            let (token, exp) = jwt(lifetime);
            (
                "200 OK",
                serde_json::json!({"access_token": token, "expires_on": exp.to_string(), "resource": "https://storage.azure.com", "token_type": "Bearer"}),
            )
        }
    };
    let body = json.to_string();
    let rsp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(rsp.as_bytes()).await;
    let _ = s.shutdown().await;
}
