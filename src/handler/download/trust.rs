//! Which model URLs are fetched, and with whose authority.
//!
//! The trust boundary: a message may name any URL, so the daemon's own
//! credential goes only to blobs inside a container the configuration names
//! (`container`); a URL carrying its own SAS is fetched exactly as given;
//! anything else is refused before a request is made. Plain `http` is
//! accepted only on an endpoint the configuration itself names (a
//! container's, or the connection string's blob endpoint: Azurite), so no
//! message can make a SAS travel in clear text. Pure.

use super::error::DownloadError;
use crate::blob::Authority;
use crate::secret::redact_url;
use url::{Origin, Url};

/// How a URL that passed the checks is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub authority: Authority,
    /// Inside a configured container (a backup of the project).
    pub in_container: bool,
}

/// Where a blob event's blob is: its container's name and its path inside
/// it, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InContainer {
    pub container: String,
    pub blob: String,
}

/// The Blob service URL of a blob that a Data Lake event names on the
/// account's `dfs` endpoint (`acct.dfs.core.windows.net`): the same blob
/// on `acct.blob.…`, where the configured container is and which the blob
/// client reads. Other URLs as they are.
pub fn blob_endpoint(url: &Url) -> Url {
    let mut out = url.clone();
    if let Some(host) = url.host_str()
        && let Some((account, rest)) = host.split_once('.')
        && let Some(suffix) = rest.strip_prefix("dfs.")
        && !account.is_empty()
    {
        let _ = out.set_host(Some(&format!("{account}.blob.{suffix}")));
    }
    out
}

/// The configured sources of models.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `host`, `host:port` or `*.suffix`, lower case.
    allowed: Vec<String>,
    /// Container URLs, paths without a trailing slash.
    containers: Vec<Url>,
    /// Origins on which plain http is accepted.
    http_origins: Vec<Origin>,
}

fn host_port(u: &Url) -> Option<String> {
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

impl Sources {
    /// From `container`, `allowed_hosts` (default: the configured blob
    /// endpoint's host and the containers' hosts) and the configured blob
    /// endpoint.
    pub fn new(
        containers: &[Url],
        allowed_hosts: &[String],
        endpoint: Option<&Url>,
    ) -> Result<Self, DownloadError> {
        let containers: Vec<Url> = containers
            .iter()
            .map(|c| {
                let mut c = c.clone();
                let path = c.path().trim_end_matches('/').to_owned();
                c.set_path(&path);
                c
            })
            .collect();
        let mut allowed: Vec<String> = allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if allowed.is_empty() {
            allowed.extend(endpoint.and_then(host_port));
            allowed.extend(containers.iter().filter_map(host_port));
            allowed.dedup();
        }
        if allowed.is_empty() {
            return Err(DownloadError::NoAllowedHosts);
        }
        let http_origins = containers
            .iter()
            .chain(endpoint)
            .filter(|u| u.scheme() == "http")
            .map(Url::origin)
            .collect();
        Ok(Self {
            allowed,
            containers,
            http_origins,
        })
    }

    /// The allow-list, for messages.
    pub fn allowed(&self) -> String {
        self.allowed.join(", ")
    }

    fn host_allowed(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let with_port = url.port().map(|p| format!("{host}:{p}"));
        self.allowed.iter().any(|a| {
            if let Some(suffix) = a.strip_prefix("*.") {
                url.port().is_none() && host.ends_with(&format!(".{suffix}"))
            } else {
                *a == host && url.port().is_none() || Some(a) == with_port.as_ref()
            }
        })
    }

    /// Whether `url` names a blob inside a configured container: same
    /// origin, the container's path followed by a blob name with no `.` or
    /// `..` segment even once decoded (`%2F..%2F` must not climb out).
    fn in_container(&self, url: &Url) -> bool {
        self.containers.iter().any(|c| {
            let Some(blob) = url
                .path()
                .strip_prefix(c.path())
                .and_then(|r| r.strip_prefix('/'))
            else {
                return false;
            };
            let decoded = percent_encoding::percent_decode_str(blob).decode_utf8_lossy();
            c.origin() == url.origin()
                && !blob.is_empty()
                && !decoded.contains('\\')
                && !decoded.contains('\0')
                && decoded
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != "..")
        })
    }

    /// For a blob event: the configured container holding `url` and the
    /// blob's path inside it, percent-decoded, for the path checks
    /// ([`super::place`]); [`Sources::decide`] then decides how it is
    /// fetched. Refused, naming the URL without its query, when it is in no
    /// configured container: the URL a blob event names is the blob's own,
    /// and no SAS stands in for a container there. No request is made for
    /// a refused URL.
    pub fn locate_blob(&self, url: &Url) -> Result<InContainer, DownloadError> {
        let found = self.containers.iter().find_map(|c| {
            let rest = url
                .path()
                .strip_prefix(c.path())
                .and_then(|r| r.strip_prefix('/'))?;
            (c.origin() == url.origin()).then_some((c, rest))
        });
        let Some((container, raw)) = found else {
            return Err(DownloadError::BlobOutside {
                url: redact_url(url.as_str()),
                containers: self.shown_containers(),
            });
        };
        let blob = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                DownloadError::BlobPath(super::place::PathError {
                    path: crate::limit::text(raw, 300).into_owned(),
                    why: "is not UTF-8 once decoded",
                })
            })?
            .into_owned();
        let name = container
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        Ok(InContainer {
            container: name,
            blob,
        })
    }

    fn shown_containers(&self) -> String {
        self.containers
            .iter()
            .map(|c| redact_url(c.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Decides how `url` is fetched, or refuses it; no request is made
    /// for a refused URL.
    pub fn decide(&self, url: &Url) -> Result<Decision, DownloadError> {
        let host = || url.host_str().unwrap_or("?").to_owned();
        if !self.host_allowed(url) {
            return Err(DownloadError::HostNotAllowed {
                host: host_port(url).unwrap_or_else(host),
                allowed: self.allowed(),
            });
        }
        match url.scheme() {
            "https" => {}
            "http" if self.http_origins.contains(&url.origin()) => {}
            _ => return Err(DownloadError::Insecure { host: host() }),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DownloadError::UserInfo);
        }
        let in_container = self.in_container(url);
        if url.query_pairs().any(|(k, _)| k == "sig") {
            return Ok(Decision {
                authority: Authority::AsGiven,
                in_container,
            });
        }
        if !in_container {
            return Err(DownloadError::Untrusted {
                containers: self.shown_containers(),
            });
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(DownloadError::QueryInContainer);
        }
        Ok(Decision {
            authority: Authority::DaemonCredential,
            in_container,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn sources(containers: &[&str], hosts: &[&str], endpoint: Option<&str>) -> Sources {
        let containers: Vec<Url> = containers.iter().map(|c| u(c)).collect();
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Sources::new(&containers, &hosts, endpoint.map(u).as_ref()).unwrap()
    }

    #[test]
    fn the_credential_goes_only_to_blobs_inside_the_container() {
        let s = sources(
            &["https://acct.blob.core.windows.net/models/"],
            &[],
            Some("https://acct.blob.core.windows.net"),
        );
        let inside = s
            .decide(&u(
                "https://acct.blob.core.windows.net/models/p%20-%20i.ONNX",
            ))
            .unwrap();
        assert_eq!(inside.authority, Authority::DaemonCredential);
        for outside in [
            "https://acct.blob.core.windows.net/private-hr/payroll.onnx",
            "https://acct.blob.core.windows.net/models-old/x.ONNX",
            "https://acct.blob.core.windows.net/models/../private-hr/payroll.onnx",
            "https://acct.blob.core.windows.net/models/%2e%2e/private-hr/payroll.onnx",
            "https://acct.blob.core.windows.net/models/..%2Fprivate-hr%2Fpayroll.onnx",
            "https://acct.blob.core.windows.net/models/a%5C..%5Cb",
            "https://acct.blob.core.windows.net/models/",
            "https://acct.blob.core.windows.net/models",
            "https://acct.blob.core.windows.net/Models/x.ONNX",
        ] {
            let e = s.decide(&u(outside)).unwrap_err();
            assert!(
                matches!(e, DownloadError::Untrusted { .. }),
                "{outside}: {e}"
            );
        }
        // Inside, but with a query that is not a SAS.
        assert!(matches!(
            s.decide(&u(
                "https://acct.blob.core.windows.net/models/x.ONNX?comp=list"
            )),
            Err(DownloadError::QueryInContainer)
        ));
        // A SAS URL is fetched as given, inside or outside.
        let sas = s
            .decide(&u(
                "https://acct.blob.core.windows.net/other/x.ONNX?sv=1&sig=abc",
            ))
            .unwrap();
        assert_eq!(sas.authority, Authority::AsGiven);
        assert!(!sas.in_container);
    }

    #[test]
    fn a_blob_event_is_located_inside_a_container_or_refused_naming_its_url() {
        let s = sources(
            &[
                "https://acct.blob.core.windows.net/models/",
                "http://127.0.0.1:10000/devstoreaccount1/drop",
            ],
            &["acct.blob.core.windows.net", "127.0.0.1:10000"],
            None,
        );
        let inside = u("https://acct.blob.core.windows.net/models/run%207/a%20b.onnx");
        let at = s.locate_blob(&inside).unwrap();
        assert_eq!(
            s.decide(&inside).unwrap().authority,
            Authority::DaemonCredential
        );
        assert_eq!(
            at,
            InContainer {
                container: "models".into(),
                blob: "run 7/a b.onnx".into()
            }
        );
        let at = s
            .locate_blob(&u("http://127.0.0.1:10000/devstoreaccount1/drop/x/y.pt"))
            .unwrap();
        assert_eq!(
            (at.container.as_str(), at.blob.as_str()),
            ("drop", "x/y.pt")
        );
        // Decoded: what the path checks then see.
        let at = s
            .locate_blob(&u("https://acct.blob.core.windows.net/models/..%2Fx"))
            .unwrap();
        assert_eq!(at.blob, "../x");
        for outside in [
            "https://acct.blob.core.windows.net/private/x.onnx?sv=1&sig=SECRET",
            "https://acct.blob.core.windows.net/models",
            "https://acct.blob.core.windows.net/modelsx/y",
            "https://evil.example/models/x.onnx",
            "http://127.0.0.1:10001/devstoreaccount1/drop/x",
            "https://127.0.0.1:10000/devstoreaccount1/drop/x",
        ] {
            let e = s.locate_blob(&u(outside)).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, DownloadError::BlobOutside { .. }),
                "{outside}: {e}"
            );
            assert!(e.is_permanent());
            let shown = outside.split('?').next().unwrap();
            assert!(text.contains(shown), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert!(matches!(
            s.locate_blob(&u("https://acct.blob.core.windows.net/models/%FF.onnx")),
            Err(DownloadError::BlobPath(_))
        ));
    }

    #[test]
    fn a_data_lake_url_is_read_on_the_blob_endpoint() {
        assert_eq!(
            blob_endpoint(&u("https://acct.dfs.core.windows.net/models/a/b.onnx")).as_str(),
            "https://acct.blob.core.windows.net/models/a/b.onnx"
        );
        for same in [
            "https://acct.blob.core.windows.net/models/x",
            "http://127.0.0.1:10000/devstoreaccount1/models/x",
            "https://dfs.example/models/x",
        ] {
            assert_eq!(blob_endpoint(&u(same)).as_str(), same);
        }
    }

    #[test]
    fn without_a_container_only_sas_urls_are_fetched() {
        let s = sources(&[], &["*.blob.core.windows.net"], None);
        let e = s
            .decide(&u("https://acct.blob.core.windows.net/models/x.ONNX"))
            .unwrap_err();
        assert!(
            e.to_string().contains("no `container` is configured"),
            "{e}"
        );
        assert!(
            s.decide(&u("https://x.blob.core.windows.net/m-1/x.ONNX.zip?sig=a"))
                .is_ok()
        );
    }

    #[test]
    fn plain_http_only_on_an_endpoint_the_configuration_names() {
        let s = sources(
            &["http://127.0.0.1:10000/devstoreaccount1/models"],
            &[
                "127.0.0.1:10000",
                "127.0.0.1:9999",
                "acct.blob.core.windows.net",
            ],
            Some("https://acct.blob.core.windows.net"),
        );
        assert!(
            s.decide(&u("http://127.0.0.1:10000/devstoreaccount1/models/x.ONNX"))
                .is_ok()
        );
        assert!(
            s.decide(&u(
                "http://127.0.0.1:10000/devstoreaccount1/other/x.ONNX?sig=1"
            ))
            .is_ok()
        );
        for refused in [
            "http://127.0.0.1:9999/models/x.ONNX",
            "http://127.0.0.1:9999/models/x.ONNX?sv=1&sig=abc",
            "http://acct.blob.core.windows.net/models/x.ONNX?sig=abc",
        ] {
            assert!(
                matches!(s.decide(&u(refused)), Err(DownloadError::Insecure { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn hosts_outside_the_allow_list_are_refused() {
        let s = sources(&["https://acct.blob.core.windows.net/models"], &[], None);
        for uri in [
            "https://evil.example/models/x.ONNX?sig=1",
            "https://acct.blob.core.windows.net.evil.example/models/x.ONNX",
            "https://acct.blob.core.windows.net:8443/models/x.ONNX",
        ] {
            assert!(
                matches!(s.decide(&u(uri)), Err(DownloadError::HostNotAllowed { .. })),
                "{uri}"
            );
        }
        assert!(matches!(
            s.decide(&u("https://user:pw@acct.blob.core.windows.net/models/x")),
            Err(DownloadError::UserInfo)
        ));
    }
}
