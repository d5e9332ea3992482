//! A ready inner service: hyper-util's pooled HTTP/1 client on the tokio runtime, over HTTPS and forward proxies
//! (feature `hyper-client`).
//!
//! The layer wraps any `Service<http::Request<_>>`; this is the one most services would write first, with the
//! request body type the layer sends (`Full<Bytes>`: the layer buffers the body to write the token into it). The
//! login goes through the same client as the calls (the layer makes its login sender from a clone of the service
//! it wraps), so the same TLS settings and proxy apply to both, and pooled connections are shared.
//!
//! - **TLS**: rustls with the ring provider (no system library, no cmake), through hyper-rustls. Trusted by
//!   default: Mozilla's root certificates as the webpki-roots crate bundles them (the same on every machine, no
//!   system store needed). [`HttpClientBuilder::ca_file`] adds a private CA, in addition to those roots or,
//!   with [`default_roots(false)`](HttpClientBuilder::default_roots), instead of them; [`client_identity_files`]
//!   presents a client certificate. `http://` URLs keep working in clear.
//! - **Proxies**: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (and their lowercase forms) as curl
//!   reads them (hyper-util's matcher), or one configured proxy ([`HttpClientBuilder::proxy`]) instead of the
//!   first three. `https://` targets are tunnelled with `CONNECT`; `http://` ones are sent to the proxy in
//!   absolute form. Basic credentials come from the proxy URL's user part. A loopback target is proxied like any
//!   other unless `NO_PROXY` names it.
//!
//! [`client_identity_files`]: HttpClientBuilder::client_identity_files

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::{PaynetConfig, TlsConfig};
use crate::error::BoxError;
use crate::tls::{PemFileError, TlsFailure};
use crate::{PaynetAuth, PolicySet};

/// hyper-util's pooled client over HTTPS (rustls) or HTTP, direct or through a forward proxy, sending the bodies
/// the layer hands on. Cloning is cheap: clones share the connection pool.
///
/// ```
/// use paynet_auth::hyper_client::HttpClient;
/// use paynet_auth::{PaynetAuth, PaynetAuthLayer, PaynetLogin, TokenManager};
/// use tower::Layer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// let client = HttpClient::builder()
///     .pool_max_idle_per_host(4)
///     // .ca_file("/etc/paynet/gateway-ca.pem")
///     // .client_identity_files("/etc/paynet/client.crt", "/etc/paynet/client.key")
///     // .proxy("http://proxy.internal:3128")
///     .build()?;
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build()?;
/// let service: PaynetAuth<HttpClient> = PaynetAuthLayer::new(manager).layer(client);
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<WireConnector>, Full<Bytes>>,
    proxies: Arc<Proxies>,
}

/// The future of [`HttpClient`]'s call.
pub type HttpResponseFuture = futures_util::future::Map<
    hyper_util::client::legacy::ResponseFuture,
    fn(
        Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    ) -> Result<Response<Incoming>, HttpError>,
>;

impl Service<Request<Full<Bytes>>> for HttpClient {
    type Response = Response<Incoming>;
    type Error = HttpError;
    type Future = HttpResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        // A request to an `http://` target goes to the proxy as it is (absolute form), so the proxy's credentials
        // ride on it; a tunnel carries them in its CONNECT instead.
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP)
            && let Some(proxy) = self.proxies.matcher.intercept(request.uri())
            && let Some(auth) = proxy.basic_auth()
        {
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        futures_util::FutureExt::map(self.client.request(request), answered as fn(_) -> _)
    }
}

impl HttpClient {
    /// A client with the defaults: Mozilla's roots, no client certificate, the environment's proxy variables.
    /// A proxy variable naming a proxy this client cannot use (`https://`, `socks5://`) makes each call that
    /// would go through it fail with [`HttpErrorKind::Proxy`], naming the variable, before anything is sent.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default client reads no file")
    }

    /// A builder for the TLS, proxy and pool settings.
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder::default()
    }

    /// The client a credential's configuration describes: its `tls` section and `proxy` (the environment's
    /// proxy variables when it has none). Refused like a configuration that cannot load: naming the key, the
    /// file and the reason.
    ///
    /// ```
    /// use paynet_auth::config::Config;
    /// use paynet_auth::hyper_client::HttpClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
    /// let config: Config = serde_json::from_value(serde_json::json!({ "paynet": {
    ///     "base_url": "https://gateway.example/gw", "username": "u", "password": "p", "terminal_id": 1,
    ///     "proxy": "http://proxy.internal:3128",
    /// }}))?;
    /// let client = HttpClient::from_config(config.default_credential())?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn from_config(config: &PaynetConfig) -> Result<Self, ClientConfigError> {
        let mut builder = Self::builder().tls(&config.tls);
        if let Some(proxy) = &config.proxy {
            builder = builder.proxy(proxy);
        }
        builder.build()
    }

    /// The one client for every credential of `config` behind one layer: a layer has one inner service, so
    /// credentials with different `tls` or `proxy` settings are refused (give each its own layer and client, as
    /// the command line tool does per command).
    ///
    /// ```
    /// use paynet_auth::config::Config;
    /// use paynet_auth::hyper_client::HttpClient;
    ///
    /// let terminal = |name: &str, proxy: &str| serde_json::json!({
    ///     "name": name, "base_url": "https://gateway.example/gw", "username": name, "password": "p",
    ///     "terminal_id": 1, "proxy": proxy,
    /// });
    /// let same: Config = serde_json::from_value(serde_json::json!({
    ///     "credentials": [terminal("north", "http://proxy:3128"), terminal("south", "http://proxy:3128")],
    /// })).unwrap();
    /// assert!(HttpClient::from_credentials(&same).is_ok());
    /// let different: Config = serde_json::from_value(serde_json::json!({
    ///     "credentials": [terminal("north", "http://proxy:3128"), terminal("south", "http://other:3128")],
    /// })).unwrap();
    /// let error = HttpClient::from_credentials(&different).unwrap_err();
    /// assert!(error.to_string().contains("`north` and `south`"), "{error}");
    /// ```
    pub fn from_credentials(config: &crate::config::Config) -> Result<Self, ClientConfigError> {
        let default = config.default_credential();
        if let Some(other) = config
            .credentials()
            .into_iter()
            .find(|c| c.tls != default.tls || c.proxy != default.proxy)
        {
            return Err(ClientConfigError {
                key: if other.tls != default.tls {
                    "tls"
                } else {
                    "proxy"
                },
                reason: format!(
                    "credentials `{}` and `{}` have different `tls` or `proxy` settings, and the credentials of \
                     one layer share its inner client: give them the same settings, or each its own layer",
                    default.credential_name(),
                    other.credential_name()
                ),
            });
        }
        Self::from_config(default)
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a proxy comes from.
#[derive(Debug, Clone)]
enum ProxyChoice {
    Environment,
    Url(String),
    Direct,
}

/// Settings of an [`HttpClient`]; nothing is read or checked until [`build`](Self::build).
#[derive(Debug)]
pub struct HttpClientBuilder {
    ca_files: Vec<PathBuf>,
    roots: Vec<CertificateDer<'static>>,
    default_roots: bool,
    identity_files: Option<(PathBuf, PathBuf)>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// A `tls` section with a certificate and no key, or the reverse: refused by `build`.
    half_identity: bool,
    proxy: ProxyChoice,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
}

impl Default for HttpClientBuilder {
    fn default() -> Self {
        Self {
            ca_files: Vec::new(),
            roots: Vec::new(),
            default_roots: true,
            identity_files: None,
            identity: None,
            half_identity: false,
            proxy: ProxyChoice::Environment,
            // hyper-util's defaults.
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
        }
    }
}

impl HttpClientBuilder {
    /// A credential's `tls` section: its CA file, whether the default roots stay, its client certificate.
    pub fn tls(mut self, tls: &TlsConfig) -> Self {
        if let Some(ca) = &tls.ca_file {
            self = self.ca_file(ca);
        }
        self = self.default_roots(tls.default_roots);
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => self = self.client_identity_files(cert, key),
            (None, None) => {}
            _ => self.half_identity = true,
        }
        self
    }

    /// Trusts the CA certificates of a PEM file (in addition to the default roots unless
    /// [`default_roots(false)`](Self::default_roots)).
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca_files.push(path.as_ref().to_owned());
        self
    }

    /// Trusts a CA certificate given in DER.
    pub fn add_root_certificate(mut self, certificate: CertificateDer<'static>) -> Self {
        self.roots.push(certificate);
        self
    }

    /// Whether Mozilla's roots are trusted (default `true`). With `false`, only the CAs added with
    /// [`ca_file`](Self::ca_file) or [`add_root_certificate`](Self::add_root_certificate) are.
    pub fn default_roots(mut self, on: bool) -> Self {
        self.default_roots = on;
        self
    }

    /// Presents the certificate chain of `cert` (PEM, leaf first) with the private key of `key` (PEM: PKCS#8,
    /// RSA or EC) when a server asks for a client certificate.
    pub fn client_identity_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.identity_files = Some((cert.as_ref().to_owned(), key.as_ref().to_owned()));
        self
    }

    /// The same with the chain and key already in memory.
    pub fn client_identity(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.identity = Some((chain, key));
        self
    }

    /// Sends every call through this forward proxy (`http://[user:password@]host:port`) instead of the one the
    /// environment names; hosts `NO_PROXY` names still go direct.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxyChoice::Url(url.into());
        self
    }

    /// Ignores the proxy variables of the environment: every call goes direct.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyChoice::Direct;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s); `None` keeps it until the server closes it.
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per host (default: no limit).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Reads the files and builds the client; refuses a file that cannot be used, a configured proxy URL that is
    /// not `http://host:port`, and a client certificate without its key. A proxy variable of the environment is
    /// judged when a call would use it (a variable for another scheme, or a host `NO_PROXY` names, must not stop
    /// the client).
    pub fn build(self) -> Result<HttpClient, ClientConfigError> {
        let file_error = |key: &'static str| {
            move |error: PemFileError| ClientConfigError {
                key,
                reason: error.to_string(),
            }
        };
        if self.half_identity {
            return Err(ClientConfigError {
                key: "tls.client_key",
                reason: "`tls.client_cert` and `tls.client_key` go together: set both or neither"
                    .into(),
            });
        }
        let mut extra = self.roots;
        for ca in &self.ca_files {
            extra.extend(crate::tls::read_certificates(ca).map_err(file_error("tls.ca_file"))?);
        }
        let roots = root_store(extra, self.default_roots)?;
        let identity = match (self.identity, self.identity_files) {
            (Some(identity), _) => Some(identity),
            (None, Some((cert, key))) => {
                crate::tls::read_certificates(&cert).map_err(file_error("tls.client_cert"))?;
                Some(crate::tls::read_identity(&cert, &key).map_err(file_error("tls.client_key"))?)
            }
            (None, None) => None,
        };
        let builder = crate::tls::client_builder().with_root_certificates(roots);
        let tls = match identity {
            Some((chain, key)) => {
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientConfigError {
                        key: "tls.client_key",
                        reason: format!(
                            "the client certificate and key cannot be used together ({e})"
                        ),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        let proxies = Arc::new(Proxies::new(&self.proxy)?);
        let mut http = HttpConnector::new();
        // hyper-rustls hands `https://` destinations to this connector too, to open the TCP connection.
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(WireConnector {
                http,
                proxies: Arc::clone(&proxies),
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector);
        Ok(HttpClient { client, proxies })
    }
}

/// A client setting that cannot be used: the configuration key it comes from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfigError {
    /// The key, as the configuration's `tls:` section or `proxy` names it (`tls.ca_file` …).
    pub key: &'static str,
    /// What is wrong, with the file if there is one.
    pub reason: String,
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.reason)
    }
}

impl StdError for ClientConfigError {}

/// The roots a client trusts: `extra` (checked to be certificates), and Mozilla's unless `default_roots` is off.
fn root_store(
    extra: Vec<CertificateDer<'static>>,
    default_roots: bool,
) -> Result<rustls::RootCertStore, ClientConfigError> {
    if !default_roots && extra.is_empty() {
        return Err(ClientConfigError {
            key: "tls.default_roots",
            reason: "the default roots are off and no CA is given: no server certificate could be trusted".into(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for (index, certificate) in extra.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| ClientConfigError {
            key: "tls.ca_file",
            reason: format!(
                "root certificate {} is not a valid X.509 certificate ({e})",
                index + 1
            ),
        })?;
    }
    if default_roots {
        roots.extend(crate::tls::webpki_roots());
    }
    Ok(roots)
}

/// The proxies a client uses.
#[derive(Debug)]
struct Proxies {
    matcher: Matcher,
}

impl Proxies {
    fn new(choice: &ProxyChoice) -> Result<Self, ClientConfigError> {
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .find_map(|name| std::env::var(name).ok())
            .unwrap_or_default();
        // curl's `*`: everything goes direct. hyper-util's matcher applies it to names only, not to a gateway
        // given by its IP address.
        let everything_direct = no_proxy.split(',').any(|entry| entry.trim() == "*");
        let matcher = match choice {
            ProxyChoice::Direct => Matcher::builder().build(),
            _ if everything_direct => Matcher::builder().build(),
            ProxyChoice::Environment => Matcher::from_env(),
            ProxyChoice::Url(url) => {
                crate::config::check_proxy_url(url).map_err(|reason| ClientConfigError {
                    key: "proxy",
                    reason,
                })?;
                // NO_PROXY still applies, as with curl's --proxy.
                Matcher::builder().all(url.clone()).no(no_proxy).build()
            }
        };
        Ok(Self { matcher })
    }
}

/// The environment variable hyper-util's matcher took a target's proxy from, in its order of precedence.
fn proxy_variable(https: bool) -> String {
    let names: &[&str] = if https {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names
        .iter()
        .find(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()))
        .map_or_else(|| "the proxy".to_owned(), |name| format!("`{name}`"))
}

/// Whether this client can speak to a proxy: an `http://` one only.
fn usable_proxy(proxy: &Uri) -> Result<(), String> {
    match proxy.scheme_str() {
        Some("http") | None => Ok(()),
        Some(scheme) => Err(format!(
            "names a proxy with the scheme `{scheme}` ({}): only http:// proxies are supported (HTTPS targets are \
             tunnelled through them with CONNECT, end to end encrypted)",
            crate::redact::url(&proxy.to_string())
        )),
    }
}

/// Opens the TCP connection for hyper-rustls: to the target, through a CONNECT tunnel, or to a forward proxy.
#[derive(Clone, Debug)]
struct WireConnector {
    http: HttpConnector,
    proxies: Arc<Proxies>,
}

impl Service<Uri> for WireConnector {
    type Response = WireStream;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<WireStream, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let Some(proxy) = self.proxies.matcher.intercept(&target) else {
            return Box::pin(async move {
                let io = http.call(target).await?;
                Ok(WireStream::new(io, false))
            });
        };
        let proxy_uri = proxy.uri().clone();
        if let Err(reason) = usable_proxy(&proxy_uri) {
            let https = target.scheme() == Some(&http::uri::Scheme::HTTPS);
            let message = format!("{} {reason}", proxy_variable(https));
            return Box::pin(async move {
                Err(Box::new(ProxyError {
                    message,
                    source: None,
                }) as BoxError)
            });
        }
        if target.scheme() == Some(&http::uri::Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy_uri.clone(), http);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            Box::pin(async move {
                let io = tunnel
                    .call(target)
                    .await
                    .map_err(|error| ProxyError::tunnel(&proxy_uri, error))?;
                Ok(WireStream::new(io, false))
            })
        } else {
            Box::pin(async move {
                let io = http
                    .call(proxy_uri.clone())
                    .await
                    .map_err(|error| ProxyError::connect(&proxy_uri, error))?;
                Ok(WireStream::new(io, true))
            })
        }
    }
}

pin_project_lite::pin_project! {
    /// A TCP connection, marked when it leads to a forward proxy so that hyper sends requests in absolute form.
    #[derive(Debug)]
    struct WireStream {
        #[pin]
        io: TokioIo<TcpStream>,
        forwarded: bool,
    }
}

impl WireStream {
    fn new(io: TokioIo<TcpStream>, forwarded: bool) -> Self {
        Self { io, forwarded }
    }
}

impl Connection for WireStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl hyper::rt::Read for WireStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for WireStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

/// A proxy that could not be reached or would not tunnel. The proxy is named without its credentials (hyper-util
/// keeps them apart from the URI).
#[derive(Debug)]
struct ProxyError {
    message: String,
    source: Option<BoxError>,
}

impl ProxyError {
    fn tunnel(proxy: &Uri, error: impl StdError + Send + Sync + 'static) -> Self {
        let proxy = crate::redact::url(&proxy.to_string());
        // hyper-util's TunnelError says little in its Display; its kind is in its Debug name.
        let kind = format!("{error:?}");
        let message = if kind.starts_with("ProxyAuthRequired") {
            format!(
                "proxy {proxy} answered 407 Proxy Authentication Required: give the proxy's user and password in \
                 its URL (http://user:password@host:port), or check them"
            )
        } else if kind.starts_with("TunnelUnsuccessful") {
            // The status is not kept by hyper-util; proxies answer 401 or 403 for wrong credentials or a port
            // their policy does not allow.
            format!(
                "proxy {proxy} refused to open a tunnel (CONNECT) to the gateway: check the proxy's user and \
                 password, and that it allows CONNECT to the gateway's port"
            )
        } else if kind.starts_with("ConnectFailed") || kind.starts_with("Io") {
            format!("cannot reach proxy {proxy}")
        } else {
            format!("proxy {proxy} failed to open a tunnel")
        };
        Self {
            message,
            source: Some(Box::new(error)),
        }
    }

    fn connect(proxy: &Uri, error: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            message: format!(
                "cannot reach proxy {}",
                crate::redact::url(&proxy.to_string())
            ),
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// What kind of failure an [`HttpError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// The TLS handshake failed, or the server ended the session over a certificate.
    Tls(TlsFailure),
    /// The proxy could not be reached, wanted credentials (407) or would not tunnel.
    Proxy,
    /// No connection could be made to the server (refused, no route, DNS …).
    Connect,
    /// The connection failed once made (closed early, a malformed answer …).
    Other,
}

/// A call that did not get an answer: what happened, in words that say what to do, with hyper-util's error as
/// the source.
///
/// ```no_run
/// # async fn example() {
/// use paynet_auth::hyper_client::{HttpClient, HttpErrorKind};
/// use tower::ServiceExt;
///
/// let request = http::Request::post("https://self-signed.example/gw/v2/user").body(Default::default()).unwrap();
/// let error = HttpClient::new().oneshot(request).await.unwrap_err();
/// if let HttpErrorKind::Tls(failure) = error.kind() {
///     eprintln!("{error}"); // the server's certificate is not signed by a trusted … trust it with `tls.ca_file`
///     # let _ = failure;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct HttpError {
    kind: HttpErrorKind,
    message: String,
    // Boxed: hyper-util's error is large, and this one is the `Err` of every call.
    source: Option<Box<hyper_util::client::legacy::Error>>,
}

impl HttpError {
    fn from_client(source: hyper_util::client::legacy::Error) -> Self {
        let chain = || {
            std::iter::successors(Some(&source as &(dyn StdError + 'static)), |e| {
                (*e).source()
            })
        };
        // Each message says what failed and leaves the cause (the proxy's refusal, `Connection refused` …) to the
        // source chain.
        let (kind, message) = if chain().any(|e| e.is::<ProxyError>()) {
            (
                HttpErrorKind::Proxy,
                "cannot reach the gateway through the proxy".to_owned(),
            )
        } else if let Some(failure) = TlsFailure::find(&source) {
            let message = match failure {
                // rustls' own words are in the chain.
                TlsFailure::Other(_) => "TLS with the gateway failed".to_owned(),
                _ => format!(
                    "TLS with the gateway failed: {}",
                    failure.explain("`tls.ca_file`", "`tls.client_cert` and `tls.client_key`")
                ),
            };
            (HttpErrorKind::Tls(failure), message)
        } else if source.is_connect() {
            (
                HttpErrorKind::Connect,
                "cannot connect to the gateway".to_owned(),
            )
        } else {
            (
                HttpErrorKind::Other,
                "the connection to the gateway failed".to_owned(),
            )
        };
        Self {
            kind,
            message,
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> &HttpErrorKind {
        &self.kind
    }

    /// Whether no connection was made (the request was not sent), as hyper-util tells.
    pub fn is_connect(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|source| source.is_connect())
    }
}

/// The answer, or the error it is: a transport failure, or a 407, which only a proxy sends (a proxy that wants
/// credentials for a forwarded `http://` request answers it and may close the connection before its body).
fn answered(
    result: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
) -> Result<Response<Incoming>, HttpError> {
    match result {
        Ok(response) if response.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED => Err(HttpError {
            kind: HttpErrorKind::Proxy,
            message: "the proxy answered 407 Proxy Authentication Required: give the proxy's user and password in \
                      its URL (http://user:password@host:port), or check them"
                .to_owned(),
            source: None,
        }),
        Ok(response) => Ok(response),
        Err(error) => Err(HttpError::from_client(error)),
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for HttpError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|source| source as _)
    }
}

/// A pooled client with the defaults ([`HttpClient::new`]): HTTPS with Mozilla's roots, plain HTTP, the
/// environment's proxy variables. Idle connections are closed after 90 s.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = paynet_auth::hyper_client::http_client();
/// # let _ = client; }
/// ```
pub fn http_client() -> HttpClient {
    HttpClient::new()
}

/// A new [`http_client`] authorised by `policies`: a service that calls the gateway with the token written in.
///
/// `policies` is a [`PolicySet`], an [`AuthPolicy`](crate::AuthPolicy), or a layer (`&PaynetAuthLayer` or
/// [`PaynetAuthLayer`](crate::PaynetAuthLayer)), whose set the service then shares.
///
/// ```
/// use paynet_auth::hyper_client::authorised_http_client;
/// use paynet_auth::{AuthPolicy, PaynetAuthLayer, PaynetLogin, TokenManager};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// let manager = TokenManager::builder(PaynetLogin::new(
///     "https://gateway.example/gw",
///     "username_17627_56530",
///     "secret".into(),
///     4_027_096,
/// ))
/// .build()?;
/// let service = authorised_http_client(AuthPolicy::paynet(manager.clone()));
/// let layer = PaynetAuthLayer::new(manager);
/// let same = authorised_http_client(&layer);
/// # let _ = (service, same); Ok(()) }
/// ```
pub fn authorised_http_client(policies: impl Into<Arc<PolicySet>>) -> PaynetAuth<HttpClient> {
    PaynetAuth::with_policies(http_client(), policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_proxy_must_be_http_with_a_host() {
        for bad in ["socks5://p:1080", "https://p:3128", "not a url", "http://"] {
            let error = HttpClient::builder().proxy(bad).build().unwrap_err();
            assert_eq!(error.key, "proxy", "{bad}: {error}");
        }
        let error = HttpClient::builder()
            .proxy("ftp://user:hunter2@p:21")
            .build()
            .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn default_roots_false_trusts_the_given_ca_alone() {
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let der = CertificateDer::from(ca.der().to_vec());
        assert_eq!(root_store(vec![der.clone()], false).unwrap().len(), 1);
        let with_defaults = root_store(vec![der], true).unwrap().len();
        assert_eq!(with_defaults, 1 + webpki_roots::TLS_SERVER_ROOTS.len());
        let error = root_store(vec![CertificateDer::from(vec![1, 2, 3])], true).unwrap_err();
        assert_eq!(error.key, "tls.ca_file", "{error}");
    }

    /// What `HttpClient::new()` does with an environment naming such a proxy: each call through it fails,
    /// saying why, before any byte (or credential) is sent to it.
    #[tokio::test]
    async fn a_connection_through_a_proxy_that_is_not_http_fails_naming_the_scheme() {
        let mut connector = WireConnector {
            http: HttpConnector::new(),
            proxies: Arc::new(Proxies {
                matcher: Matcher::builder()
                    .all("https://agent:hunter2@127.0.0.1:9")
                    .build(),
            }),
        };
        let error = connector
            .call(Uri::from_static("https://gateway.example/gw"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("only http:// proxies are supported"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let tls = TlsConfig {
            client_cert: Some("client.crt".into()),
            ..TlsConfig::default()
        };
        let error = HttpClient::builder().tls(&tls).build().unwrap_err();
        assert_eq!(error.key, "tls.client_key", "{error}");
    }

    #[test]
    fn no_roots_at_all_is_refused() {
        let error = HttpClient::builder()
            .default_roots(false)
            .build()
            .unwrap_err();
        assert_eq!(error.key, "tls.default_roots");
    }
}
