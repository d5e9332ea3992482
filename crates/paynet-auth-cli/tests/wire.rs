//! The production wire, end to end through the real binary: HTTPS to the simulator with a private CA, a real
//! forward proxy (Debian's tinyproxy, which `.ci/run` installs) chosen through the environment or the YAML, with
//! and without basic credentials, and no secret of a URL in any output even at `RUST_LOG=trace`.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use paynet_sim::tls::{Authority, ServerTls};
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, Simulator};
use tempfile::TempDir;
use tokio::process::Command;

mod support;

#[allow(dead_code)]
#[path = "../../../tests/support/servers.rs"]
mod servers;

use support::{Run, run};

const BIN: &str = env!("CARGO_BIN_EXE_paynet-auth");
const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];
const CATEGORIES: [&str; 3] = ["call", "/v2/service", "getCategoriesList"];

impl Run {
    fn failure_line(&self) -> String {
        assert!(!self.status.success(), "expected failure:\n{}", self.stdout);
        assert_ne!(self.status.code(), Some(101), "a panic: {}", self.stderr);
        self.stderr.trim().to_owned()
    }

    fn assert_reveals_none(&self, secrets: &[&str]) -> &Self {
        for secret in secrets {
            for (stream, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                assert!(!text.contains(secret), "`{secret}` on {stream}:\n{text}");
            }
        }
        self
    }
}

/// A real tinyproxy on a free loopback port, logging each request it handles; killed when dropped.
struct Tinyproxy {
    port: u16,
    dir: TempDir,
    child: tokio::process::Child,
}

impl Tinyproxy {
    async fn start(basic_auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nLogLevel Info\nLogFile \"{log}\"\nPidFile \"{pid}\"\n\
             MaxClients 64\nTimeout 30\n",
            log = dir.path().join("proxy.log").display(),
            pid = dir.path().join("proxy.pid").display(),
        );
        if let Some((user, password)) = basic_auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy is installed (`apt-get install tinyproxy`; .ci/run installs it)");
        // Ready when it accepts a connection: a bounded poll, not a fixed sleep.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self { port, dir, child };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("tinyproxy did not listen on {port} within 5 s");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The request lines the proxy logged (`CONNECT 127.0.0.1:…`, `POST http://…`).
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("proxy.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                line.split_once("): ")
                    .map(|(_, request)| request.to_owned())
            })
            .filter(|request| request.starts_with("CONNECT ") || request.starts_with("POST "))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway over HTTPS with a private CA, or plain HTTP, and a directory with its configuration.
struct Gateway {
    sim: Simulator,
    dir: TempDir,
}

impl Gateway {
    async fn https() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("paynet-auth wire test CA");
        ca.write_cert(&dir.path().join("ca.pem")).unwrap();
        let tls = ServerTls::new(&ca.issue_server(&["127.0.0.1", "localhost"]));
        let sim = Simulator::builder().tls(tls).start().await.unwrap();
        Self { sim, dir }
    }

    async fn http() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::builder().start().await.unwrap();
        Self { sim, dir }
    }

    /// Writes `paynet.yaml` with `extra` lines in the `paynet:` section; the CA file when the gateway has one.
    fn config(&self, extra: &str) -> PathBuf {
        let ca = self.dir.path().join("ca.pem");
        let tls = if ca.exists() {
            format!("  tls:\n    ca_file: \"{}\"\n", ca.display())
        } else {
            String::new()
        };
        let yaml = format!(
            "paynet:\n  base_url: \"{}\"\n  username: \"{DEFAULT_USERNAME}\"\n  password: \"${{PAYNET_PASSWORD}}\"\n  \
             terminal_id: {DEFAULT_TERMINAL_ID}\n  login_timeout: \"5s\"\n  store:\n    url: \"sqlite://{}\"\n{tls}{extra}",
            self.sim.base_url(),
            self.dir.path().join("tokens.db").display(),
        );
        let path = self.dir.path().join("paynet.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn port(&self) -> u16 {
        self.sim.addr().port()
    }
}

/// The binary with no proxy variable inherited, the password in its environment, quiet logs.
fn paynet_auth(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).arg("--config").arg(config);
    for variable in PROXY_VARIABLES {
        command.env_remove(variable);
    }
    command
        .env("PAYNET_PASSWORD", DEFAULT_PASSWORD)
        .env("RUST_LOG", "off")
        .env_remove("PAYNET_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[tokio::test]
async fn call_over_https_trusts_the_ca_of_tls_ca_file() {
    let gateway = Gateway::https().await;
    let config = gateway.config("");
    run(paynet_auth(&config, &CATEGORIES, &[]))
        .await
        .assert_success();
    assert_eq!(gateway.sim.stats().logins, 1);
}

#[tokio::test]
async fn call_without_the_ca_says_it_is_the_certificate_and_what_to_set() {
    let gateway = Gateway::https().await;
    let config = gateway.config("");
    // The same file without its `tls:` section.
    let yaml = std::fs::read_to_string(&config).unwrap();
    let without_tls: String = yaml
        .lines()
        .take_while(|line| !line.starts_with("  tls:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&config, without_tls).unwrap();
    let line = run(paynet_auth(&config, &CATEGORIES, &[]))
        .await
        .failure_line();
    assert!(
        line.contains("unknown issuer") && line.contains("`tls.ca_file`"),
        "{line}"
    );
}

#[tokio::test]
async fn https_proxy_from_the_environment_tunnels_with_connect() {
    let gateway = Gateway::https().await;
    let proxy = Tinyproxy::start(None).await;
    let config = gateway.config("");
    run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("HTTPS_PROXY", &proxy.url())],
    ))
    .await
    .assert_success();
    let tunnel = format!("CONNECT 127.0.0.1:{} HTTP/1.1", gateway.port());
    let requests = proxy.requests();
    // The login and the call share one tunnelled connection.
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r == &tunnel),
        "{requests:?}"
    );
}

#[tokio::test]
async fn lowercase_and_all_proxy_variables_are_read_too() {
    let gateway = Gateway::https().await;
    let config = gateway.config("");
    for variable in ["https_proxy", "ALL_PROXY", "all_proxy"] {
        let proxy = Tinyproxy::start(None).await;
        run(paynet_auth(
            &config,
            &CATEGORIES,
            &[(variable, &proxy.url())],
        ))
        .await
        .assert_success();
        assert!(!proxy.requests().is_empty(), "{variable} was not honoured");
    }
}

#[tokio::test]
async fn no_proxy_naming_the_gateway_goes_direct() {
    let gateway = Gateway::https().await;
    let proxy = Tinyproxy::start(None).await;
    let config = gateway.config("");
    let env = [
        ("HTTPS_PROXY", proxy.url()),
        ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(paynet_auth(&config, &CATEGORIES, &env))
        .await
        .assert_success();
    assert_eq!(proxy.requests(), Vec::<String>::new());
    assert_eq!(gateway.sim.stats().logins, 1);
}

#[tokio::test]
async fn a_proxy_with_basic_credentials_is_used_with_them_and_answers_407_without() {
    let gateway = Gateway::https().await;
    let proxy = Tinyproxy::start(Some(("paynet", "Pr0xyPassw0rd"))).await;

    // In the YAML: it takes precedence over the environment, whose proxy here does not even listen.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = gateway.config(&format!(
        "  proxy: \"{}\"\n",
        proxy.url_with("paynet", "Pr0xyPassw0rd")
    ));
    run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("HTTPS_PROXY", &dead), ("RUST_LOG", "trace")],
    ))
    .await
    .assert_success()
    .assert_reveals_none(&["Pr0xyPassw0rd"]);
    assert!(!proxy.requests().is_empty());

    // Without credentials: a 407, the proxy named, nothing about the gateway's certificate.
    let config = gateway.config(&format!("  proxy: \"{}\"\n", proxy.url()));
    let line = run(paynet_auth(&config, &CATEGORIES, &[]))
        .await
        .failure_line();
    assert!(
        line.contains("407") && line.contains(&proxy.url()),
        "{line}"
    );

    // With a wrong password (tinyproxy answers 401 to the CONNECT): refused, the password not printed.
    let config = gateway.config(&format!(
        "  proxy: \"{}\"\n",
        proxy.url_with("paynet", "WrongPassw0rd")
    ));
    let run = run(paynet_auth(&config, &CATEGORIES, &[("RUST_LOG", "trace")])).await;
    let line = run.failure_line();
    assert!(
        line.contains("refused to open a tunnel") && line.contains("user and password"),
        "{line}"
    );
    run.assert_reveals_none(&["WrongPassw0rd"]);
    assert_eq!(gateway.sim.stats().logins, 1);
}

#[tokio::test]
async fn an_http_gateway_is_reached_through_the_proxy_in_absolute_form_with_credentials() {
    let gateway = Gateway::http().await;
    let proxy = Tinyproxy::start(Some(("paynet", "Pr0xyPassw0rd"))).await;
    let config = gateway.config("");
    let url = proxy.url_with("paynet", "Pr0xyPassw0rd");
    run(paynet_auth(&config, &CATEGORIES, &[("HTTP_PROXY", &url)]))
        .await
        .assert_success();
    let base = gateway.sim.base_url();
    let requests = proxy.requests();
    assert!(
        requests.contains(&format!("POST {base}/v2/user HTTP/1.1"))
            && requests.contains(&format!("POST {base}/v2/service HTTP/1.1")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn no_command_prints_a_secret_of_a_store_or_proxy_url_even_at_trace() {
    let gateway = Gateway::https().await;
    let proxy = Tinyproxy::start(Some(("paynet", "Pr0xyPassw0rd"))).await;
    let store_password = "St0re#P@ss/w?rd%";
    let query_password = "QueryPassw0rd";
    let ssl_password = "SslPassw0rd";
    let secrets = [
        store_password,
        "P@ss/w?rd%",
        query_password,
        ssl_password,
        "Pr0xyPassw0rd",
        DEFAULT_PASSWORD,
    ];
    let proxy_line = format!(
        "  proxy: \"{}\"\n",
        proxy.url_with("paynet", "Pr0xyPassw0rd")
    );
    // A database that is down (a closed port), then one that answers (the machine's PostgreSQL: trust
    // authentication, so the passwords are sent and ignored).
    let postgres = servers::postgres_url();
    // Percent-encoded, as a URL parser needs it, so that this one really connects; its decoded form is a secret too.
    let encoded = "St0re%23P%40ss%2Fw%3Frd%25";
    let live = postgres.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{encoded}@"),
        1,
    );
    let live_query = if live.contains('?') { '&' } else { '?' };
    let stores = [
        // Written raw: every parser gives up on it, and the messages still must not show it.
        format!(
            "postgres://app:{store_password}@127.0.0.1:{}/pay?password={query_password}&sslpassword={ssl_password}",
            free_port()
        ),
        format!(
            "mysql://app:{store_password}@127.0.0.1:{}/pay?pass={query_password}",
            free_port()
        ),
        // Encoded, on a closed port: the connection is refused after the URL was understood.
        format!(
            "postgres://app:{encoded}@127.0.0.1:{}/pay?password={query_password}",
            free_port()
        ),
        format!("{live}{live_query}password={query_password}"),
    ];
    // The proxy's credentials as they travel, in the CONNECT's Proxy-Authorization header.
    let proxy_header = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("paynet:Pr0xyPassw0rd")
    };
    let secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .chain([encoded, proxy_header.as_str()])
        .collect();
    for store in &stores {
        let extra =
            format!("{proxy_line}  store:\n    url: \"{store}\"\n    connect_timeout: \"1s\"\n");
        // The store section replaces the SQLite one written by `config`.
        let config = gateway.config("");
        let yaml = std::fs::read_to_string(&config).unwrap();
        let mut kept = String::new();
        let mut skipping = false;
        for line in yaml.lines() {
            if line.starts_with("  store:") {
                skipping = true;
                continue;
            }
            if skipping && line.starts_with("    ") {
                continue;
            }
            skipping = false;
            kept.push_str(line);
            kept.push('\n');
        }
        kept.push_str(&extra);
        std::fs::write(&config, kept).unwrap();
        for args in [
            &CATEGORIES[..],
            &["token", "status"],
            &["token", "refresh"],
            &["token", "clear"],
            &["migrate"],
            &[
                "load",
                "/v2/service",
                "getCategoriesList",
                "--requests",
                "5",
            ],
        ] {
            let run = run(paynet_auth(&config, args, &[("RUST_LOG", "trace")])).await;
            run.assert_reveals_none(&secrets);
            // The live database serves every command: the secrets were in the traffic, not only in errors.
            if store.starts_with(&live) && args != ["token", "status"] {
                run.assert_success();
            }
        }
    }
}

#[tokio::test]
async fn no_proxy_star_sends_even_a_gateway_named_by_its_address_direct() {
    let gateway = Gateway::https().await;
    let proxy = Tinyproxy::start(None).await;
    let config = gateway.config("");
    // The gateway is 127.0.0.1: an IP address, which a `*` entry must cover too.
    let url = proxy.url();
    run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("HTTPS_PROXY", &url), ("NO_PROXY", "*")],
    ))
    .await
    .assert_success();
    assert_eq!(proxy.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn no_proxy_applies_to_the_configured_proxy_too() {
    let gateway = Gateway::https().await;
    let proxy = Tinyproxy::start(None).await;
    let config = gateway.config(&format!("  proxy: \"{}\"\n", proxy.url()));
    run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("NO_PROXY", "127.0.0.1")],
    ))
    .await
    .assert_success();
    assert_eq!(proxy.requests(), Vec::<String>::new());
    // And without NO_PROXY it is used.
    run(paynet_auth(&config, &CATEGORIES, &[]))
        .await
        .assert_success();
    assert!(!proxy.requests().is_empty());
}

#[tokio::test]
async fn a_proxy_the_client_cannot_speak_to_is_refused_without_its_password() {
    let gateway = Gateway::https().await;
    let config = gateway.config("");
    let port = free_port();
    for (variable, url) in [
        (
            "HTTPS_PROXY",
            format!("https://agent:Pr0xyPassw0rd@127.0.0.1:{port}"),
        ),
        (
            "ALL_PROXY",
            format!("socks5://agent:Pr0xyPassw0rd@127.0.0.1:{port}"),
        ),
    ] {
        let run = run(paynet_auth(
            &config,
            &CATEGORIES,
            &[(variable, &url), ("RUST_LOG", "trace")],
        ))
        .await;
        let line = run.failure_line();
        assert!(
            line.contains("only http:// proxies are supported") && line.contains(variable),
            "{variable}: {line}"
        );
        run.assert_reveals_none(&["Pr0xyPassw0rd"]);
    }
    assert_eq!(gateway.sim.stats().login_attempts, 0);
}

#[tokio::test]
async fn a_proxy_url_with_unencoded_separators_in_its_password_is_refused_at_load() {
    let gateway = Gateway::https().await;
    for password in ["p@ss", "p#ss", "p/ss"] {
        let config = gateway.config(&format!(
            "  proxy: \"http://agent:{password}w0rd@127.0.0.1:3128\"\n"
        ));
        let run = run(paynet_auth(&config, &CATEGORIES, &[])).await;
        let line = run.failure_line();
        assert!(
            line.contains("paynet.proxy") && line.contains("percent-encode"),
            "{password}: {line}"
        );
        run.assert_reveals_none(&[&format!("{password}w0rd")]);
    }
}

#[tokio::test]
async fn proxy_credentials_on_forwarded_requests_are_not_logged_even_at_trace() {
    use base64::Engine as _;
    let gateway = Gateway::http().await;
    let proxy = Tinyproxy::start(Some(("paynet", "Pr0xyPassw0rd"))).await;
    let config = gateway.config(&format!(
        "  proxy: \"{}\"\n",
        proxy.url_with("paynet", "Pr0xyPassw0rd")
    ));
    let header = base64::engine::general_purpose::STANDARD.encode("paynet:Pr0xyPassw0rd");
    for args in [
        &CATEGORIES[..],
        &["token", "refresh"],
        &[
            "load",
            "/v2/service",
            "getCategoriesList",
            "--requests",
            "5",
        ],
    ] {
        run(paynet_auth(&config, args, &[("RUST_LOG", "trace")]))
            .await
            .assert_success()
            .assert_reveals_none(&["Pr0xyPassw0rd", &header]);
    }
    assert!(!proxy.requests().is_empty());
}

#[tokio::test]
async fn a_proxy_variable_for_the_other_scheme_or_bypassed_stops_nothing() {
    let gateway = Gateway::https().await;
    let config = gateway.config("");
    let unusable = format!("https://127.0.0.1:{}", free_port());
    run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("HTTP_PROXY", &unusable)],
    ))
    .await
    .assert_success();
    run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("https_proxy", &unusable), ("NO_PROXY", "127.0.0.1")],
    ))
    .await
    .assert_success();
    // Used, it is refused naming the variable as it was spelled.
    let line = run(paynet_auth(
        &config,
        &CATEGORIES,
        &[("https_proxy", &unusable)],
    ))
    .await
    .failure_line();
    assert!(
        line.contains("`https_proxy` names a proxy with the scheme `https`"),
        "{line}"
    );
}

#[tokio::test]
async fn a_407_to_a_forwarded_request_is_reported_as_the_proxys() {
    let gateway = Gateway::http().await;
    let proxy = Tinyproxy::start(Some(("paynet", "Pr0xyPassw0rd"))).await;
    let config = gateway.config("");
    let url = proxy.url();
    let line = run(paynet_auth(&config, &CATEGORIES, &[("HTTP_PROXY", &url)]))
        .await
        .failure_line();
    assert!(
        line.contains("the proxy answered 407 Proxy Authentication Required"),
        "{line}"
    );
    assert_eq!(gateway.sim.stats().login_attempts, 0);
}

#[tokio::test]
async fn a_proxy_url_without_a_port_or_with_a_path_is_refused_at_load_saying_which() {
    let gateway = Gateway::https().await;
    for (proxy, says) in [
        ("http://127.0.0.1", "(no port)"),
        ("http://127.0.0.1:3128/foo", "has no path or query"),
    ] {
        let config = gateway.config(&format!("  proxy: \"{proxy}\"\n"));
        let line = run(paynet_auth(&config, &CATEGORIES, &[]))
            .await
            .failure_line();
        assert!(
            line.contains("paynet.proxy") && line.contains(says),
            "{proxy}: {line}"
        );
    }
}
