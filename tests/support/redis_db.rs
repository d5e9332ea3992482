//! Redis for the store tests: the shared server (`PAYNET_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`;
//! every test uses keys of its own), a raw connection to look at and tamper with the store's keys behind its back,
//! and private `redis-server`s a test starts, stops and starts again on a free port of its own.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use paynet_auth::store::{RedisStore, StoreOptions};

use super::db::encryption_key;

pub use super::servers::redis_url;

/// The store's keys for a credential key, as `RedisStore` documents them.
pub fn token_key(key: &str) -> String {
    format!("paynet-auth:{{{key}}}:token")
}
pub fn lease_key(key: &str) -> String {
    format!("paynet-auth:{{{key}}}:lease")
}
pub fn lease_info_key(key: &str) -> String {
    format!("paynet-auth:{{{key}}}:lease-info")
}

/// A Redis for one test, with the methods of the SQL `Fixture` that the store suite calls.
pub struct RedisFixture {
    pub url: String,
}

impl RedisFixture {
    pub fn shared() -> Self {
        Self { url: redis_url() }
    }

    pub async fn store(&self, options: StoreOptions) -> RedisStore {
        RedisStore::connect(&self.url, options)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    pub async fn plain_store(&self) -> RedisStore {
        self.store(StoreOptions::default()).await
    }

    pub async fn encrypted_store(&self, key_byte: u8) -> RedisStore {
        self.store(StoreOptions {
            encryption_key: Some(encryption_key(key_byte)),
            ..StoreOptions::default()
        })
        .await
    }

    pub async fn raw(&self) -> RedisRaw {
        let client = redis::Client::open(self.url.as_str()).expect("a Redis URL");
        RedisRaw(
            client
                .get_multiplexed_async_connection()
                .await
                .unwrap_or_else(|e| panic!("raw connection to {}: {e}", self.url)),
        )
    }
}

/// A direct connection to the store's keys.
pub struct RedisRaw(pub redis::aio::MultiplexedConnection);

impl RedisRaw {
    async fn query<T: redis::FromRedisValue>(&mut self, command: &mut redis::Cmd) -> T {
        command
            .query_async(&mut self.0)
            .await
            .expect("raw Redis command")
    }

    /// The stored token field and nonce of `key`.
    pub async fn token_columns(&mut self, key: &str) -> (String, Option<String>) {
        let (token, nonce): (Option<String>, Option<String>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(token_key(key))
                    .arg("token")
                    .arg("nonce"),
            )
            .await;
        (token.expect("a token hash"), nonce)
    }

    pub async fn set_token_column(&mut self, key: &str, value: &str) {
        let _: i64 = self
            .query(
                redis::cmd("HSET")
                    .arg(token_key(key))
                    .arg("token")
                    .arg(value),
            )
            .await;
    }

    /// Copies the token hash of `from` under `to`, as someone copying a row would.
    pub async fn copy_row(&mut self, from: &str, to: &str) {
        let fields: Vec<(String, String)> =
            self.query(redis::cmd("HGETALL").arg(token_key(from))).await;
        let mut command = redis::cmd("HSET");
        command.arg(token_key(to));
        for (name, value) in fields {
            command.arg(name).arg(value);
        }
        let _: i64 = self.query(&mut command).await;
    }

    /// What the last lease of `key` was taken for, in milliseconds.
    pub async fn lease_span_ms(&mut self, key: &str) -> i64 {
        let (at, until): (i64, i64) = self
            .query(
                redis::cmd("HMGET")
                    .arg(lease_info_key(key))
                    .arg("acquired_at")
                    .arg("expires_at"),
            )
            .await;
        until - at
    }

    /// Moves the lease of `key` `by_ms` into the past, as if that much time had passed on the server: its TTL
    /// shortened (the lease key gone if it ran out) and its recorded times shifted.
    pub async fn age_lease(&mut self, key: &str, by_ms: i64) {
        let aged: i64 = redis::Script::new(
            r"
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return 0 end
if left <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], left - ARGV[1]) end
redis.call('HINCRBY', KEYS[2], 'acquired_at', -ARGV[1])
redis.call('HINCRBY', KEYS[2], 'expires_at', -ARGV[1])
return 1
",
        )
        .key(lease_key(key))
        .key(lease_info_key(key))
        .arg(by_ms)
        .invoke_async(&mut self.0)
        .await
        .expect("age the lease");
        assert_eq!(aged, 1, "a held lease for {key}");
    }
}

/// A free TCP port on loopback (free when asked; the server started on it takes it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own, on its own port, keeping nothing on disk.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with extra arguments (`--requirepass`, TLS settings …).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.run();
        server
    }

    /// A server listening for TLS only, on its port, with `dir`'s `server.crt`, `server.key` and `ca.pem`;
    /// clients must present a certificate when `client_auth` is set.
    pub fn start_tls(dir: &Path, client_auth: bool) -> Self {
        let port = free_port();
        let file = |name: &str| dir.join(name).display().to_string();
        let mut args = vec![
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file("server.crt"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            if client_auth { "yes" } else { "no" }.to_owned(),
        ];
        args.insert(0, "--port".to_owned());
        args.insert(1, "0".to_owned());
        let mut server = Self {
            port,
            args,
            child: None,
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn run(&mut self) {
        let mut command = Command::new("redis-server");
        if !self.args.iter().any(|a| a == "--port") {
            command.args(["--port", &self.port.to_string()]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().expect("redis-server is installed"));
        // Ready once it accepts connections on its port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never listened",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients); what it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
