//! The Shared Key signing policy for the Azure SDK pipeline.
//!
//! The official Azure SDK crates sign requests with Entra ID tokens only.
//! Shared Key (account key) signing is needed for Azurite and for users who
//! still hold a connection string, so [`SharedKeyPolicy`] is written here: no
//! maintained crate provides it for the 1.x pipeline. It follows "Authorize
//! with Shared Key" of the Storage REST reference. It signs; it does not
//! decide when to sign (that is [`super::connector`]'s and [`super::blob`]'s).

use crate::secret::Secret;
use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEV_KEY;
    use azure_core::http::Method;
    use url::Url;

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
