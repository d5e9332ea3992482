//! Where tokens come from: the [`TokenSource`] trait and the Paynet `login` preset.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::LoginError;
use crate::record::LoginMeta;
use crate::redact::gateway_text;
use crate::token::Grant;

/// The answer of the token endpoint, as the transport received it.
///
/// A [`LoginSender`](crate::token::LoginSender) hands one to the manager, which gives it to
/// [`TokenSource::parse_response`]:
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use paynet_auth::{LoginError, PaynetLogin, TokenSource};
/// use paynet_auth::token::LoginResponse;
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let response = LoginResponse { status: StatusCode::SERVICE_UNAVAILABLE, headers: HeaderMap::new(), body: Bytes::new() };
/// let error = login.parse_response(response).unwrap_err();
/// assert!(matches!(error, LoginError::HttpStatus { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE));
/// ```
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
///
/// [`PaynetLogin`] and [`ClientCredentials`] are the presets; another endpoint takes a few lines:
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::Request;
/// use http_body_util::Full;
/// use paynet_auth::TokenSource;
/// use paynet_auth::token::{Grant, LoginResponse};
/// use paynet_auth::record::LoginMeta;
/// use paynet_auth::{LoginError, TokenManager};
///
/// /// A session endpoint that answers the bare token as plain text, valid for five minutes.
/// struct SessionLogin;
///
/// impl TokenSource for SessionLogin {
///     fn endpoint(&self) -> &str {
///         "https://auth.example/session"
///     }
///     fn store_key(&self) -> String {
///         "session:auth.example".into()
///     }
///     fn login_request(&self) -> Result<Request<Full<Bytes>>, LoginError> {
///         Ok(Request::post(self.endpoint()).body(Full::default()).expect("a valid request"))
///     }
///     fn parse_response(&self, response: LoginResponse) -> Result<Grant, LoginError> {
///         let token = String::from_utf8(response.body.to_vec()).ok().filter(|t| !t.is_empty());
///         let token = token.ok_or_else(|| LoginError::MissingToken { endpoint: self.endpoint().into() })?;
///         Ok(Grant { token: token.into(), meta: LoginMeta::default(), expires_in: Some(Duration::from_secs(300)) })
///     }
/// }
///
/// let manager = TokenManager::builder(SessionLogin).build().unwrap();
/// assert_eq!(manager.store_key(), "session:auth.example");
/// assert_eq!(manager.endpoint(), "https://auth.example/session");
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// The token endpoint's URL, for messages and logs.
    fn endpoint(&self) -> &str;

    /// The key under which the token is stored: one row per credential.
    fn store_key(&self) -> String;

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
/// use paynet_auth::{PaynetLogin, TokenSource};
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
    pub fn store_key(mut self, key: impl Into<String>) -> Self {
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

    fn store_key(&self) -> String {
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
        // The gateway's text goes into the error: a hostile or broken gateway may echo the password, a token,
        // terminal escapes or megabytes. The user name is not a secret (it names the account in the credential
        // key and in `token status`).
        let password = self.password.expose_secret();
        let answer: RpcAnswer =
            serde_json::from_slice(&response.body).map_err(|e| LoginError::NotJson {
                endpoint: endpoint(),
                reason: gateway_text(&e.to_string(), &[password]),
            })?;
        if let Some(error) = answer.error {
            let token = answer.result.and_then(|result| result.token);
            return Err(LoginError::Refused {
                endpoint: endpoint(),
                code: error.code,
                message: gateway_text(
                    &error.message,
                    &[password, token.as_deref().unwrap_or_default()],
                ),
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
/// use paynet_auth::TokenSource;
/// use paynet_auth::token::source::ClientCredentials;
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
    /// A number, or (as some servers send it, and golang.org/x/oauth2 accepts) a string holding one.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `expires_in` as a lifetime: whole seconds, as a JSON number or a string holding one.
fn expires_in(value: Option<serde_json::Value>) -> Result<Option<std::time::Duration>, String> {
    let seconds = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    seconds
        .map(|s| Some(std::time::Duration::from_secs(s)))
        .ok_or_else(|| "`expires_in` is not a whole number of seconds".to_owned())
}

impl TokenSource for ClientCredentials {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn store_key(&self) -> String {
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
        // RFC 6749 puts errors in a 400 (401 for client authentication), but servers also send them with 200: an
        // `error` member means a refusal either way.
        if (response.status.is_success() || response.status.is_client_error())
            && let Ok(OAuthAnswer {
                error: Some(error),
                error_description,
                access_token,
                ..
            }) = &answer
        {
            let secrets = [
                self.client_secret.expose_secret(),
                access_token.as_deref().unwrap_or_default(),
            ];
            return Err(LoginError::OAuthRefused {
                endpoint: endpoint(),
                status: response.status,
                error: gateway_text(error, &secrets),
                description: error_description
                    .as_deref()
                    .map(|description| gateway_text(description, &secrets)),
            });
        }
        if !response.status.is_success() {
            return Err(LoginError::HttpStatus {
                endpoint: endpoint(),
                status: response.status,
            });
        }
        let answer = answer.map_err(|e| LoginError::NotJson {
            endpoint: endpoint(),
            reason: gateway_text(&e.to_string(), &[self.client_secret.expose_secret()]),
        })?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| LoginError::MissingToken {
                endpoint: endpoint(),
            })?;
        // RFC 6749 section 5.1: the type is case-insensitive ("Bearer", "bearer" and "BEARER" are all met).
        if let Some(token_type) = &answer.token_type
            && !token_type.eq_ignore_ascii_case("bearer")
        {
            return Err(LoginError::UnsupportedTokenType {
                endpoint: endpoint(),
                token_type: gateway_text(token_type, &[self.client_secret.expose_secret(), &token]),
            });
        }
        let expires_in = expires_in(answer.expires_in).map_err(|reason| LoginError::NotJson {
            endpoint: endpoint(),
            reason,
        })?;
        Ok(Grant {
            token: token.into(),
            meta: LoginMeta::default(),
            expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::redact::MAX_GATEWAY_TEXT as MAX_ECHO;

    const SECRET: &str = "s3cret-Client-Pa55";

    fn source() -> ClientCredentials {
        ClientCredentials::new("https://auth.test/oauth/token", "client", SECRET.into())
    }

    fn answer(status: u16, body: &str) -> Result<Grant, LoginError> {
        source().parse_response(LoginResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        })
    }

    #[test]
    fn expires_in_is_read_as_a_number_or_a_numeric_string() {
        for body in [
            r#"{"access_token":"T","token_type":"Bearer","expires_in":3600}"#,
            r#"{"access_token":"T","token_type":"Bearer","expires_in":"3600"}"#,
            r#"{"access_token":"T","token_type":"Bearer","expires_in":" 3600 "}"#,
        ] {
            let grant = answer(200, body).unwrap();
            assert_eq!(grant.expires_in, Some(Duration::from_secs(3600)), "{body}");
        }
        let grant = answer(200, r#"{"access_token":"T","expires_in":null}"#).unwrap();
        assert_eq!(grant.expires_in, None);
        for bad in [r#""soon""#, "-5", "1.5", "[]"] {
            let body = format!(r#"{{"access_token":"T","expires_in":{bad}}}"#);
            let error = answer(200, &body).unwrap_err();
            assert!(
                matches!(&error, LoginError::NotJson { reason, .. } if reason.contains("expires_in")),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn an_error_member_is_an_oauth_refusal_in_a_2xx_or_4xx_answer() {
        let body = r#"{"error":"invalid_grant","error_description":"The grant expired"}"#;
        for status in [200, 400, 401] {
            match answer(status, body).unwrap_err() {
                LoginError::OAuthRefused {
                    endpoint,
                    status: got,
                    error,
                    description,
                } => {
                    assert_eq!(endpoint, "https://auth.test/oauth/token");
                    assert_eq!(got.as_u16(), status);
                    assert_eq!(error, "invalid_grant");
                    assert_eq!(description.as_deref(), Some("The grant expired"));
                }
                other => panic!("{status}: unexpected {other}"),
            }
        }
        let error = answer(200, body).unwrap_err();
        assert!(error.is_refused());
        assert_eq!(
            error.to_string(),
            "token endpoint https://auth.test/oauth/token refused the login (HTTP 200 OK): OAuth error \
             `invalid_grant` \"The grant expired\""
        );
        // Without a description; and a 5xx stays an HTTP error.
        let error = answer(401, r#"{"error":"invalid_client"}"#).unwrap_err();
        assert!(
            matches!(
                &error,
                LoginError::OAuthRefused {
                    description: None,
                    ..
                }
            ),
            "{error}"
        );
        assert!(matches!(
            answer(503, body).unwrap_err(),
            LoginError::HttpStatus { .. }
        ));
    }

    #[test]
    fn a_refusal_never_echoes_the_client_secret_or_a_token() {
        let body = format!(
            r#"{{"error":"invalid_client {SECRET}","error_description":"client secret {SECRET} is wrong; token LEAKED-TOKEN revoked\n{}","access_token":"LEAKED-TOKEN"}}"#,
            "x".repeat(500)
        );
        let error = answer(400, &body).unwrap_err();
        let LoginError::OAuthRefused {
            error: code,
            description: Some(description),
            ..
        } = &error
        else {
            panic!("unexpected {error}");
        };
        assert_eq!(code, "invalid_client ****");
        assert!(description.starts_with("client secret **** is wrong; token **** revoked x"));
        assert!(description.chars().count() <= MAX_ECHO + 1, "{description}");
        let message = error.to_string();
        assert!(
            !message.contains(SECRET) && !message.contains("LEAKED"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn token_type_is_compared_without_case() {
        for token_type in ["Bearer", "bearer", "BEARER"] {
            let body = format!(r#"{{"access_token":"T","token_type":"{token_type}"}}"#);
            assert!(answer(200, &body).is_ok(), "{token_type}");
        }
        assert!(answer(200, r#"{"access_token":"T"}"#).is_ok());
        let error = answer(200, r#"{"access_token":"T","token_type":"mac"}"#).unwrap_err();
        assert!(
            matches!(&error, LoginError::UnsupportedTokenType { token_type, .. } if token_type == "mac"),
            "{error}"
        );
    }
}
