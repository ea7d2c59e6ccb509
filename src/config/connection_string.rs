//! Storage connection strings (`auth.connection_string`): the format users
//! copy from the portal, parsed into endpoints and a credential.
//!
//! Part of the configuration layer because it is the format of a config
//! value: validation reports a bad string at load time, and the Azure layer
//! consumes the parsed [`ConnectionString`]. Pure; errors never echo a key.

use crate::secret::Secret;
use std::collections::BTreeMap;
use std::fmt;
use url::Url;

/// The well-known account and key of the storage emulator (public values,
/// documented by Microsoft for Azurite).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
