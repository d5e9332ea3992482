//! A MariaDB server of the test's own with TLS required (the machine's MariaDB has TLS off): a data directory in a
//! temporary directory (`mariadb-install-db`), a CA and a server certificate made with rcgen, and `mariadbd` on a
//! free port with `--require-secure-transport=ON`. Dropping [`TlsMariaDb`] kills the server, also when the test
//! fails.
//!
//! Needs, as on CI: root (or the owner of the temporary directory) and the `mariadb-server` package
//! (`mariadb-install-db` and `mariadbd`, looked for on `PATH` and in `/usr/sbin`, `/usr/bin`,
//! `/usr/local/mysql/bin`). The options are all on the command line, with `--no-defaults`: the system's
//! configuration (its `user = mysql`, its data directory) is not read.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

/// The database the store tests use on this server.
pub const DATABASE: &str = "paynet";
/// The account the store connects with (no password), so that its connections can be told from the test's own.
pub const USER: &str = "paynet";
/// An account that must present a client certificate signed by the server's CA.
pub const X509_USER: &str = "paynet_x509";

/// How long the server may take to accept a TLS connection (a few seconds on these machines).
const READY_WITHIN: Duration = Duration::from_secs(90);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key, both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("valid names");
        params
            .distinguished_name
            .push(DnType::CommonName, "paynet test server");
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a server certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate signed by this CA, with an RSA key made by `openssl genrsa` (OpenSSL 3 writes it as
    /// PKCS#8; rcgen's ring backend cannot make RSA keys), written into `dir`: `(certificate, key)`.
    pub fn issue_rsa_client(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let key_file = dir.join("client.key");
        let output = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key_file)
            .arg("2048")
            .output()
            .expect("run openssl genrsa");
        assert!(output.status.success(), "openssl genrsa: {output:?}");
        let key_pem = std::fs::read_to_string(&key_file).unwrap();
        let key = KeyPair::from_pem(&key_pem).expect("rcgen reads the RSA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "paynet test client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a client certificate");
        let cert_file = dir.join("client.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        (cert_file, key_file)
    }

    /// Writes the CA certificate into `dir` as `file`, and returns its path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.cert_pem).expect("write the CA certificate");
        path
    }
}

/// A running `mariadbd` that accepts TLS connections only.
pub struct TlsMariaDb {
    /// Killed (and reaped) when dropped.
    _server: Guard,
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: TestCa,
    /// Its certificate, as a file.
    pub ca_file: PathBuf,
    dir: TempDir,
}

impl TlsMariaDb {
    /// Starts a server whose certificate, signed by [`ca`](Self::ca), holds `names`; returns once it accepts a
    /// TLS connection, or panics with its error log.
    pub async fn start(names: &[&str]) -> Self {
        // In memory where the machine has a tmpfs: a new server writes some hundred megabytes (InnoDB's files),
        // and that much writeback on the disk the shared MariaDB syncs to slows its commits for the tests after
        // this one (in two full runs with these on disk, the MariaDB fleet that follows had a p99 of 0.8-0.9 s
        // instead of 0.5 s, and failed calls).
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let data = dir.path().join("data");
        let ca = TestCa::new("paynet test MariaDB CA");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let (cert_pem, key_pem) = ca.issue(names);
        let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::write(&cert_file, cert_pem).unwrap();
        std::fs::write(&key_file, key_pem).unwrap();
        let init_file = dir.path().join("init.sql");
        std::fs::write(
            &init_file,
            format!(
                "CREATE DATABASE IF NOT EXISTS {DATABASE};\n\
                 CREATE USER IF NOT EXISTS '{USER}'@'%';\n\
                 GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';\n\
                 CREATE USER IF NOT EXISTS '{X509_USER}'@'%' REQUIRE X509;\n\
                 GRANT ALL ON {DATABASE}.* TO '{X509_USER}'@'%';\n"
            ),
        )
        .unwrap();

        // A temporary directory of its own: servers bootstrapping at once in a shared /tmp clash on their
        // temporary tables ("Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let install_log = dir.path().join("install.log");
        let status = Command::new(program("mariadb-install-db"))
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdin(Stdio::null())
            .stdout(log_file(&install_log))
            .stderr(log_file(&install_log))
            .status()
            .expect("run mariadb-install-db (is mariadb-server installed?)");
        assert!(
            status.success(),
            "mariadb-install-db failed ({status}):\n{}",
            read(&install_log)
        );

        // A port free a moment ago; if another process takes it in between, the server exits and the start is
        // tried again on another port, in the same data directory.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log = dir.path().join(format!("mariadbd-{port}.log"));
            let child = Command::new(program("mariadbd"))
                .env("TMPDIR", &tmp)
                .arg("--no-defaults")
                .arg("--user=root")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", dir.path().join("m.sock").display()))
                .arg(format!("--pid-file={}", dir.path().join("m.pid").display()))
                .arg(format!("--log-error={}", log.display()))
                .arg(format!("--ssl-cert={}", cert_file.display()))
                .arg(format!("--ssl-key={}", key_file.display()))
                .arg(format!("--ssl-ca={}", ca_file.display()))
                .arg("--require-secure-transport=ON")
                .arg(format!("--init-file={}", init_file.display()))
                .arg("--skip-log-bin")
                .arg("--skip-name-resolve")
                // For `ciphers_of`: the TLS cipher of every session, seen from another one.
                .arg("--performance-schema=ON")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mariadbd");
            // From here on, a panic (or a failed assertion in the test) kills the server on the way out.
            let mut guard = Guard(child);
            match wait_ready(&mut guard.0, port, &ca_file).await {
                Ready::Yes => {
                    return Self {
                        _server: guard,
                        port,
                        ca,
                        ca_file,
                        dir,
                    };
                }
                Ready::Exited if attempt < 3 => continue,
                outcome => panic!(
                    "the TLS MariaDB on port {port} did not become ready ({outcome:?}, within {READY_WITHIN:?}):\n{}",
                    read(&log)
                ),
            }
        }
    }

    /// A URL for the store: user [`USER`] (no password), database [`DATABASE`], the given query (without `?`).
    pub fn url(&self, host: &str, query: &str) -> String {
        self.url_as(USER, host, query)
    }

    /// [`url`](Self::url) for another account.
    pub fn url_as(&self, user: &str, host: &str, query: &str) -> String {
        let mut url = format!("mysql://{user}@{host}:{}/{DATABASE}", self.port);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The TLS cipher of every open session of `user` (empty for a plaintext one), seen from a session of root's.
    pub async fn ciphers_of(&self, user: &str) -> Vec<String> {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(root_opts(self.port, &self.ca_file))
            .await
            .expect("root connection to the TLS MariaDB");
        let ciphers = conn
            .exec(
                "SELECT s.VARIABLE_VALUE FROM performance_schema.threads t \
                 JOIN performance_schema.status_by_thread s USING (THREAD_ID) \
                 WHERE s.VARIABLE_NAME = 'Ssl_cipher' AND t.PROCESSLIST_USER = ?",
                (user,),
            )
            .await
            .expect("read the sessions' ciphers");
        let _ = conn.disconnect().await;
        ciphers
    }

    /// The server's `Aborted_connects`: connection attempts that failed on the server's side.
    pub async fn aborted_connects(&self) -> u64 {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(root_opts(self.port, &self.ca_file))
            .await
            .expect("root connection to the TLS MariaDB");
        let row: Option<(String, u64)> = conn
            .query_first("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")
            .await
            .expect("read Aborted_connects");
        let _ = conn.disconnect().await;
        row.expect("Aborted_connects").1
    }

    /// The temporary directory the server lives in (for more certificate files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Kills the server it holds when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
enum Ready {
    Yes,
    Exited,
    TimedOut,
}

/// Polls with a TLS connection until the server answers and has made the test database.
async fn wait_ready(child: &mut Child, port: u16, ca_file: &Path) -> Ready {
    use mysql_async::prelude::Queryable;
    let started = Instant::now();
    while started.elapsed() < READY_WITHIN {
        if let Ok(Some(_)) = child.try_wait() {
            return Ready::Exited;
        }
        if let Ok(Ok(mut conn)) = tokio::time::timeout(
            Duration::from_secs(5),
            mysql_async::Conn::new(root_opts(port, ca_file)),
        )
        .await
        {
            let made: Option<String> = conn
                .query_first(format!(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{DATABASE}'"
                ))
                .await
                .ok()
                .flatten();
            let _ = conn.disconnect().await;
            if made.is_some() {
                return Ready::Yes;
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ready::TimedOut
}

/// root over TLS, on TCP, without checking the certificate (the test's own server; the checks are the store's).
fn root_opts(port: u16, ca_file: &Path) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .ssl_opts(
            mysql_async::SslOpts::default()
                .with_root_certs(vec![ca_file.to_owned().into()])
                .with_disable_built_in_roots(true)
                .with_danger_accept_invalid_certs(true),
        )
        .into()
}

/// `name` on `PATH`, else in the directories Debian and the MariaDB tarballs put it.
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    let usual = [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/mysql/bin",
        "/usr/local/bin",
    ]
    .into_iter()
    .map(PathBuf::from);
    on_path
        .chain(usual)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn log_file(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}
