//! Where tokens come from: the [`TokenSource`] trait and the Paynet `login` preset.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::LoginError;
use crate::token::{Grant, LoginMeta};

/// The answer of the token endpoint, as the transport received it.
#[derive(Debug)]
pub struct LoginResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Builds the login request and reads its answer. The request is sent by the manager, through a clone of the
/// service the layer wraps, so the caller's TLS, timeouts and proxies apply to it as well.
pub trait TokenSource: Send + Sync + 'static {
    /// The token endpoint's URL, for messages and logs.
    fn endpoint(&self) -> &str;

    /// The key under which the token is stored: one row per credential.
    fn credential_key(&self) -> String;

    /// The login request.
    fn login_request(&self) -> Result<Request<Full<Bytes>>, LoginError>;

    /// Reads the endpoint's answer into a grant, or the typed reason it is not one.
    fn parse_response(&self, response: LoginResponse) -> Result<Grant, LoginError>;
}

/// The Paynet agent gateway's `login` method.
///
/// It sends `{"jsonrpc":"2.0","method":"login","id":1,"params":{"username":…,"password":…,"terminal_id":…}}`
/// to `base_url + login_path` and reads `result.token` with the session's metadata.
///
/// ```
/// use paynet_auth::token::{PaynetLogin, TokenSource};
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// assert_eq!(login.endpoint(), "https://gateway.example/gw/v2/user");
/// let request = login.login_request().unwrap();
/// assert_eq!(request.method(), "POST");
/// assert!(!format!("{login:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct PaynetLogin {
    endpoint: String,
    username: String,
    password: SecretString,
    terminal_id: u64,
    key: Option<String>,
}

/// The default path of the login method below the gateway root.
pub const DEFAULT_LOGIN_PATH: &str = "/v2/user";

impl PaynetLogin {
    /// Logs in at `base_url` + [`DEFAULT_LOGIN_PATH`].
    pub fn new(
        base_url: &str,
        username: impl Into<String>,
        password: SecretString,
        terminal_id: u64,
    ) -> Self {
        Self {
            endpoint: join_url(base_url, DEFAULT_LOGIN_PATH),
            username: username.into(),
            password,
            terminal_id,
            key: None,
        }
    }

    /// Logs in at `base_url` + `path` instead. Defaults to [`DEFAULT_LOGIN_PATH`].
    pub fn login_path(mut self, base_url: &str, path: &str) -> Self {
        self.endpoint = join_url(base_url, path);
        self
    }

    /// Stores the token under `key` instead of the default `paynet:<endpoint>:<username>:<terminal id>`.
    pub fn credential_key_name(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Joins a base URL and a path with exactly one slash between them.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    if path.is_empty() {
        return base.to_owned();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

impl fmt::Debug for PaynetLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaynetLogin")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"****")
            .field("terminal_id", &self.terminal_id)
            .finish()
    }
}

#[derive(Deserialize)]
struct RpcAnswer {
    #[serde(default)]
    result: Option<LoginResult>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginResult {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    agent_id: Option<serde_json::Value>,
    #[serde(default)]
    terminal_id: Option<serde_json::Value>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    #[serde(default)]
    user_login: Option<serde_json::Value>,
}

// The gateway writes some ids as strings and some as numbers; keep them as the text it sent.
fn id_text(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl TokenSource for PaynetLogin {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn credential_key(&self) -> String {
        self.key.clone().unwrap_or_else(|| {
            format!(
                "paynet:{}:{}:{}",
                self.endpoint, self.username, self.terminal_id
            )
        })
    }

    fn login_request(&self) -> Result<Request<Full<Bytes>>, LoginError> {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "login",
            "id": 1,
            "params": {
                "username": self.username,
                "password": self.password.expose_secret(),
                "terminal_id": self.terminal_id,
            }
        });
        let body = serde_json::to_vec(&body).map_err(|e| LoginError::InvalidRequest {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        })?;
        Request::builder()
            .method(Method::POST)
            .uri(&self.endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| LoginError::InvalidRequest {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })
    }

    fn parse_response(&self, response: LoginResponse) -> Result<Grant, LoginError> {
        let endpoint = || self.endpoint.clone();
        if !response.status.is_success() {
            return Err(LoginError::HttpStatus {
                endpoint: endpoint(),
                status: response.status,
            });
        }
        let answer: RpcAnswer =
            serde_json::from_slice(&response.body).map_err(|e| LoginError::NotJson {
                endpoint: endpoint(),
                reason: e.to_string(),
            })?;
        if let Some(error) = answer.error {
            return Err(LoginError::Refused {
                endpoint: endpoint(),
                code: error.code,
                message: error.message,
            });
        }
        let result = answer.result.ok_or_else(|| LoginError::MissingToken {
            endpoint: endpoint(),
        })?;
        let token =
            result
                .token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| LoginError::MissingToken {
                    endpoint: endpoint(),
                })?;
        Ok(Grant {
            token: token.into(),
            meta: LoginMeta {
                agent_id: id_text(result.agent_id),
                terminal_id: id_text(result.terminal_id),
                user_id: id_text(result.user_id),
                user_login: id_text(result.user_login),
            },
            expires_in: None,
        })
    }
}

/// An OAuth 2.0 client-credentials token endpoint, for Bearer-header integrations (the "Acquiring" style):
/// `POST grant_type=client_credentials` with HTTP Basic client authentication, answer
/// `{"access_token": …, "expires_in": …}`.
///
/// ```
/// use paynet_auth::token::{source::ClientCredentials, TokenSource};
/// let source = ClientCredentials::new("https://auth.example/oauth/token", "client", "secret".into());
/// let request = source.login_request().unwrap();
/// assert_eq!(request.headers()["content-type"], "application/x-www-form-urlencoded");
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    endpoint: String,
    client_id: String,
    client_secret: SecretString,
    scope: Option<String>,
}

impl ClientCredentials {
    /// A client-credentials grant at `endpoint`.
    pub fn new(
        endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            client_id: client_id.into(),
            client_secret,
            scope: None,
        }
    }

    /// Asks for `scope`. Defaults to none.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"****")
            .field("scope", &self.scope)
            .finish()
    }
}

#[derive(Deserialize)]
struct OAuthAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

impl TokenSource for ClientCredentials {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn credential_key(&self) -> String {
        format!("oauth:{}:{}", self.endpoint, self.client_id)
    }

    fn login_request(&self) -> Result<Request<Full<Bytes>>, LoginError> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.client_id,
            self.client_secret.expose_secret()
        ));
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &self.scope {
            form.append_pair("scope", scope);
        }
        let form = form.finish();
        let mut authorization =
            http::HeaderValue::try_from(format!("Basic {basic}")).map_err(|e| {
                LoginError::InvalidRequest {
                    endpoint: self.endpoint.clone(),
                    reason: e.to_string(),
                }
            })?;
        authorization.set_sensitive(true);
        Request::builder()
            .method(Method::POST)
            .uri(&self.endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, authorization)
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| LoginError::InvalidRequest {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })
    }

    fn parse_response(&self, response: LoginResponse) -> Result<Grant, LoginError> {
        let endpoint = || self.endpoint.clone();
        let answer: Result<OAuthAnswer, _> = serde_json::from_slice(&response.body);
        if !response.status.is_success() {
            if let Ok(OAuthAnswer {
                error: Some(error), ..
            }) = answer
            {
                return Err(LoginError::Refused {
                    endpoint: endpoint(),
                    code: i64::from(response.status.as_u16()),
                    message: error,
                });
            }
            return Err(LoginError::HttpStatus {
                endpoint: endpoint(),
                status: response.status,
            });
        }
        let answer = answer.map_err(|e| LoginError::NotJson {
            endpoint: endpoint(),
            reason: e.to_string(),
        })?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| LoginError::MissingToken {
                endpoint: endpoint(),
            })?;
        Ok(Grant {
            token: token.into(),
            meta: LoginMeta::default(),
            expires_in: answer.expires_in.map(std::time::Duration::from_secs),
        })
    }
}
