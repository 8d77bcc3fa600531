//! The HTTP(S) client of `dnsbgpd ctl`: one request per call over a fresh
//! hyper HTTP/1.1 connection, with a bounded body and a deadline.
//!
//! Everything that comes back from the daemon is untrusted: the status
//! line, headers and body are read by hyper, the body is capped at
//! [`ClientOptions::max_body`], and every failure becomes one [`CtlError`]
//! line that names the request.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the system keeps its trusted CA bundle (Debian, Ubuntu).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Every way a `ctl` request can fail; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad flags or arguments (caught before anything is sent).
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the daemon at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("TLS with {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout { method: Method, url: String, timeout: Duration },
    /// The answer broke HTTP (garbage, truncated, too large).
    #[error("{method} {url}: broken answer: {reason}")]
    Broken { method: Method, url: String, reason: String },
    /// A well-formed answer with an error status.
    #[error("{method} {url}: {status}{message}")]
    Status { method: Method, url: String, status: StatusCode, message: String },
    /// A 2xx answer whose body is not what the API promises.
    #[error("{method} {url}: unexpected answer: {reason}")]
    Unexpected { method: Method, url: String, reason: String },
}

/// The API's address: `http://HOST:PORT` or `https://HOST:PORT`, with an
/// optional path prefix (a reverse proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
    /// Prefix of every API path, without a trailing slash (usually empty).
    pub base_path: String,
}

impl Endpoint {
    /// Parses `URL` or `HOST:PORT` (taken as `http://`).
    pub fn parse(text: &str) -> Result<Endpoint, CtlError> {
        let bad = |why: &str| CtlError::Usage(format!("--api {text:?}: {why}"));
        let full = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
        let uri: Uri = full.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed (give the token with --token or --token-file)"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match authority.as_str().rsplit_once(':') {
            Some((_, p)) if !p.contains(']') => p.parse().map_err(|_| bad(&format!("bad port {p:?}")))?,
            _ => {
                if https {
                    443
                } else {
                    80
                }
            }
        };
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint { https, host, port, base_path })
    }

    /// The endpoint of a daemon listening on `listen`; a wildcard address
    /// is reached over loopback.
    pub fn from_listen(listen: std::net::SocketAddr, https: bool) -> Endpoint {
        let ip = match listen.ip() {
            std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Endpoint { https, host: ip.to_string(), port: listen.port(), base_path: String::new() }
    }

    /// `HOST:PORT` as sent in the Host header (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The full URL of an API path (for messages).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}{path}", if self.https { "https" } else { "http" }, self.authority(), self.base_path)
    }
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer` on every request.
    pub token: Option<String>,
    /// PEM CA certificates trusted for https (default: the system bundle).
    pub ca_file: Option<PathBuf>,
    /// Deadline of one request, connection included.
    pub timeout: Duration,
    /// The largest answer body accepted.
    pub max_body: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { token: None, ca_file: None, timeout: Duration::from_secs(30), max_body: 512 << 20 }
    }
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The API client.
pub struct Client {
    pub endpoint: Endpoint,
    options: ClientOptions,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    /// Checks the options (a CA file is read now) and builds the client.
    pub fn new(endpoint: Endpoint, options: ClientOptions) -> Result<Client, CtlError> {
        if let Some(t) = &options.token
            && (t.is_empty() || t.bytes().any(|b| b.is_ascii_control() || b == b' '))
        {
            return Err(CtlError::Usage("the token is empty or contains spaces or control characters".into()));
        }
        let tls = if endpoint.https {
            let ca = match &options.ca_file {
                Some(f) => f.clone(),
                None if std::path::Path::new(SYSTEM_CA_BUNDLE).exists() => PathBuf::from(SYSTEM_CA_BUNDLE),
                None => {
                    return Err(CtlError::Usage(format!(
                        "{} is https: give the CA certificate with --ca-file",
                        endpoint.url("")
                    )));
                }
            };
            let config = crate::tls::client_config(&ca).map_err(CtlError::Usage)?;
            Some(crate::tls::connector(config))
        } else {
            None
        };
        Ok(Client { endpoint, options, tls })
    }

    /// Sends one request and reads the whole answer, within the timeout.
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, CtlError> {
        self.send_with(method, path, &[], body).await
    }

    /// [`Client::send`] with extra header fields, each replacing the one of
    /// the same name the client would send (`Host`, `Authorization`,
    /// `Content-Type`, ...). The integration tests talk to the API through
    /// this too.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, CtlError> {
        let url = self.endpoint.url(path);
        let timeout = self.options.timeout;
        match tokio::time::timeout(timeout, self.send_inner(method.clone(), path, headers, body, &url)).await {
            Ok(r) => r,
            Err(_) => Err(CtlError::Timeout { method, url, timeout }),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        url: &str,
    ) -> Result<Answer, CtlError> {
        let ep = &self.endpoint;
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| CtlError::Unreachable { url: ep.url(""), reason: e.to_string() })?;
        let _ = tcp.set_nodelay(true);
        let broken = |reason: String| CtlError::Broken { method: method.clone(), url: url.to_string(), reason };

        let mut request = self.request(&method, path, body).map_err(|e| broken(e.to_string()))?;
        for (name, value) in headers {
            let name = header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| CtlError::Usage(format!("header name {name:?}: {e}")))?;
            let value = header::HeaderValue::from_str(value)
                .map_err(|e| CtlError::Usage(format!("header {name} value {value:?}: {e}")))?;
            request.headers_mut().insert(name, value);
        }
        let max_body = self.options.max_body;
        let answer = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                    .map_err(|e| CtlError::Tls { url: ep.url(""), reason: e.to_string() })?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| CtlError::Tls { url: ep.url(""), reason: e.to_string() })?;
                exchange(TokioIo::new(stream), request, max_body).await
            }
            None => exchange(TokioIo::new(tcp), request, max_body).await,
        };
        answer.map_err(broken)
    }

    fn request(&self, method: &Method, path: &str, body: Option<Vec<u8>>) -> axum::http::Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.endpoint.base_path))
            .header(header::HOST, self.endpoint.authority())
            .header(header::USER_AGENT, concat!("dnsbgpd-ctl/", env!("CARGO_PKG_VERSION")))
            .header(header::ACCEPT, "application/json");
        if let Some(t) = &self.options.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        req.body(Full::new(body.map(Bytes::from).unwrap_or_default()))
    }
}

/// One request on a fresh connection: status and the whole body (at most
/// `max_body` bytes). The connection is driven inside this future, beside
/// the request, so no task outlives it (a timeout drops both).
async fn exchange<T>(io: TokioIo<T>, request: Request<Full<Bytes>>, max_body: usize) -> Result<Answer, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
    let answer = async move {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    format!("the body is larger than {max_body} bytes")
                } else {
                    format!("body: {e}")
                }
            })?
            .to_bytes();
        Ok(Answer { status, body })
    };
    let mut answer = std::pin::pin!(answer);
    tokio::select! {
        a = &mut answer => a,
        c = conn => {
            // The connection ended first (the server closed it after the
            // answer, or broke it): what it delivered is still readable.
            c.map_err(|e| e.to_string())?;
            answer.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("127.0.0.1:9153").unwrap();
        assert_eq!((e.https, e.host.as_str(), e.port, e.base_path.as_str()), (false, "127.0.0.1", 9153, ""));
        let e = Endpoint::parse("https://[::1]:9443/dnsbgpd/").unwrap();
        assert_eq!((e.https, e.host.as_str(), e.port, e.base_path.as_str()), (true, "::1", 9443, "/dnsbgpd"));
        assert_eq!(e.authority(), "[::1]:9443");
        assert_eq!(e.url("/api/v1/status"), "https://[::1]:9443/dnsbgpd/api/v1/status");
        assert_eq!(Endpoint::parse("https://api.example").unwrap().port, 443);
        for bad in ["ftp://x:1", "http://", "http://user:pw@h:1", "http://h:1/?x=1", "h:99999", ""] {
            assert!(matches!(Endpoint::parse(bad), Err(CtlError::Usage(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn wildcard_listen_is_reached_over_loopback() {
        let e = Endpoint::from_listen("0.0.0.0:9153".parse().unwrap(), false);
        assert_eq!(e.authority(), "127.0.0.1:9153");
        let e = Endpoint::from_listen("[::]:9153".parse().unwrap(), true);
        assert_eq!(e.url("/x"), "https://[::1]:9153/x");
    }

    #[test]
    fn a_token_with_spaces_is_refused() {
        let opts = ClientOptions { token: Some("a b".into()), ..Default::default() };
        assert!(Client::new(Endpoint::parse("127.0.0.1:1").unwrap(), opts).is_err());
    }
}
