//! Authentication: connection strings, the Shared Key signing policy, and
//! Entra ID credentials for the token-based modes.
//!
//! The official Azure SDK crates sign requests with Entra ID tokens only.
//! Shared Key (account key) signing is needed for Azurite and for users who
//! still hold a connection string, so [`SharedKeyPolicy`] is written here: no
//! maintained crate provides it for the 1.x pipeline. It follows "Authorize
//! with Shared Key" of the Storage REST reference.

use crate::config::{AuthMode, Secret};
use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use url::Url;

/// The well-known account and key of the storage emulator (public values,
/// documented by Microsoft for Azurite).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The scope of Azure Storage tokens.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// A parsed storage connection string.
#[derive(Clone)]
pub struct ConnectionString {
    pub account: String,
    pub key: Option<Secret>,
    pub sas: Option<Secret>,
    pub queue_endpoint: Url,
    pub blob_endpoint: Url,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("account", &self.account)
            .field("queue_endpoint", &self.queue_endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// What is wrong with a connection string. Never includes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error(
        "`{0}` is not a `Key=Value` pair (connection strings look like `AccountName=...;AccountKey=...`)"
    )]
    NotAPair(String),
    #[error("missing `{0}`")]
    Missing(&'static str),
    #[error("`{key}` is not a valid URL: {reason}")]
    BadUrl { key: &'static str, reason: String },
    #[error("`AccountKey` is not base64")]
    BadKey,
    #[error("neither `AccountKey` nor `SharedAccessSignature` is set")]
    NoCredential,
}

impl ConnectionString {
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let mut pairs: BTreeMap<String, String> = BTreeMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                // Only the key name is echoed: the part may be a mangled secret.
                let name: String = part.chars().take(20).collect();
                return Err(ConnectionStringError::NotAPair(
                    if name.len() < part.len() {
                        format!("{name}...")
                    } else {
                        name
                    },
                ));
            };
            pairs.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let get = |k: &str| pairs.get(k).cloned();
        let parse_url = |key: &'static str, v: &str| {
            Url::parse(v).map_err(|e| ConnectionStringError::BadUrl {
                key,
                reason: e.to_string(),
            })
        };
        if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            let host = match get("developmentstorageproxyuri") {
                Some(proxy) => parse_url("DevelopmentStorageProxyUri", &proxy)?
                    .host_str()
                    .unwrap_or("127.0.0.1")
                    .to_owned(),
                None => "127.0.0.1".to_owned(),
            };
            return Ok(Self {
                account: DEV_ACCOUNT.into(),
                key: Some(Secret::new(DEV_KEY)),
                sas: None,
                queue_endpoint: Url::parse(&format!("http://{host}:10001/{DEV_ACCOUNT}")).unwrap(),
                blob_endpoint: Url::parse(&format!("http://{host}:10000/{DEV_ACCOUNT}")).unwrap(),
            });
        }
        let account = get("accountname");
        let key = get("accountkey").map(Secret::new);
        let sas = get("sharedaccesssignature").map(Secret::new);
        if let Some(k) = &key {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(k.expose())
                .map_err(|_| ConnectionStringError::BadKey)?;
        }
        if key.is_none() && sas.is_none() {
            return Err(ConnectionStringError::NoCredential);
        }
        let protocol = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
        let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into());
        let endpoint = |explicit: Option<String>, key: &'static str, service: &str| match explicit {
            Some(u) => parse_url(key, &u),
            None => match &account {
                Some(a) => parse_url(key, &format!("{protocol}://{a}.{service}.{suffix}")),
                None => Err(ConnectionStringError::Missing("AccountName")),
            },
        };
        let queue_endpoint = endpoint(get("queueendpoint"), "QueueEndpoint", "queue")?;
        let blob_endpoint = endpoint(get("blobendpoint"), "BlobEndpoint", "blob")?;
        let account = match account {
            Some(a) => a,
            // Shared Key needs the account name; a SAS-only string does not.
            None if key.is_some() => return Err(ConnectionStringError::Missing("AccountName")),
            None => queue_endpoint
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or_default()
                .to_owned(),
        };
        Ok(Self {
            account,
            key,
            sas,
            queue_endpoint,
            blob_endpoint,
        })
    }
}

/// Signs each request try with the account key ("SharedKey" scheme). A
/// per-try policy, because `x-ms-date` and the signature must be fresh on
/// every retry.
pub struct SharedKeyPolicy {
    account: String,
    key: Secret,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    pub fn new(account: impl Into<String>, key: Secret) -> Self {
        Self {
            account: account.into(),
            key,
        }
    }

    /// The string to sign for Blob, Queue and File services, version
    /// 2015-02-21 and later (an empty Content-Length when the body is empty).
    pub(crate) fn string_to_sign(&self, request: &Request) -> String {
        let h = |name: &str| {
            request
                .headers()
                .iter()
                .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let len = request.body().len().unwrap_or(0);
        let content_length = if len == 0 {
            String::new()
        } else {
            len.to_string()
        };
        let mut out = String::with_capacity(256);
        out.push_str(request.method().as_ref());
        out.push('\n');
        for v in [
            h("content-encoding"),
            h("content-language"),
            content_length,
            h("content-md5"),
            h("content-type"),
            // Date is empty because x-ms-date is always set.
            String::new(),
            h("if-modified-since"),
            h("if-match"),
            h("if-none-match"),
            h("if-unmodified-since"),
            h("range"),
        ] {
            out.push_str(&v);
            out.push('\n');
        }
        let mut ms: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.as_str().trim().to_owned(),
                )
            })
            .collect();
        ms.sort();
        for (k, v) in ms {
            out.push_str(&k);
            out.push(':');
            out.push_str(&v);
            out.push('\n');
        }
        let url = request.url();
        out.push('/');
        out.push_str(&self.account);
        out.push_str(url.path());
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            params
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.into_owned());
        }
        for (k, mut vs) in params {
            vs.sort();
            out.push('\n');
            out.push_str(&k);
            out.push(':');
            out.push_str(&vs.join(","));
        }
        out
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let now = azure_core::time::OffsetDateTime::now_utc();
        request.insert_header("x-ms-date", azure_core::time::to_rfc7231(&now));
        let signature = azure_core::hmac::hmac_sha256(
            &self.string_to_sign(request),
            &azure_core::credentials::Secret::new(self.key.expose().to_owned()),
        )?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{}", self.account, signature),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// What to check when a token-based mode cannot get a token.
pub fn credential_hint(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::ManagedIdentity => {
            "check that this host has a managed identity (VM, App Service, Container Apps) and, for a user-assigned identity, that auth.client_id is its client id"
        }
        AuthMode::WorkloadIdentity => {
            "check AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE (the workload identity webhook sets them when the pod's service account is annotated and the pod has the label azure.workload.identity/use: \"true\")"
        }
        AuthMode::AzureCli => "run `az login` as the user running cvnotify",
        AuthMode::Sas => "check auth.sas_token: it may have expired or lack permissions",
        AuthMode::ConnectionString => "check auth.connection_string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    #[test]
    fn development_storage() {
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(cs.account, DEV_ACCOUNT);
        assert_eq!(
            cs.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert_eq!(cs.key.unwrap().expose(), DEV_KEY);
    }

    #[test]
    fn explicit_connection_string() {
        let cs = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};QueueEndpoint=http://127.0.0.1:4567/devstoreaccount1;"
        ))
        .unwrap();
        assert_eq!(
            cs.queue_endpoint.as_str(),
            "http://127.0.0.1:4567/devstoreaccount1"
        );
        let cs = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={DEV_KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(
            cs.queue_endpoint.as_str(),
            "https://acct.queue.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn connection_string_errors_do_not_echo_secrets() {
        let e = ConnectionString::parse("AccountName=a;AccountKey=not base64!!").unwrap_err();
        assert_eq!(e.to_string(), "`AccountKey` is not base64");
        let e = ConnectionString::parse("AccountName=a").unwrap_err();
        assert_eq!(e, ConnectionStringError::NoCredential);
        let e = ConnectionString::parse("verysecretkeymaterialwithoutequals").unwrap_err();
        assert!(!e.to_string().contains("withoutequals"), "{e}");
    }

    /// The canonical form from the Storage REST documentation's example,
    /// checked field by field.
    #[test]
    fn string_to_sign_layout() {
        let policy = SharedKeyPolicy::new("myaccount", Secret::new(DEV_KEY));
        let url = Url::parse(
            "http://127.0.0.1:10001/devstoreaccount1/q1/messages?visibilitytimeout=30&numofmessages=16",
        )
        .unwrap();
        let mut req = Request::new(url, Method::Get);
        req.insert_header("x-ms-version", "2026-04-06");
        req.insert_header("x-ms-date", "Sat, 21 Nov 2026 06:00:00 GMT");
        req.insert_header("x-ms-client-request-id", "abc");
        let sts = policy.string_to_sign(&req);
        assert_eq!(
            sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-client-request-id:abc\n\
             x-ms-date:Sat, 21 Nov 2026 06:00:00 GMT\n\
             x-ms-version:2026-04-06\n\
             /myaccount/devstoreaccount1/q1/messages\n\
             numofmessages:16\n\
             visibilitytimeout:30"
        );
    }
}
