//! Where the test suite finds its servers: `PAYNET_TEST_POSTGRES_URL`, `PAYNET_TEST_MYSQL_URL` and
//! `PAYNET_TEST_REDIS_URL`, else the ones `.ci/run` starts. Shared by the library's tests and the CLI's.

pub fn postgres_url() -> String {
    std::env::var("PAYNET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn mysql_url() -> String {
    std::env::var("PAYNET_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("PAYNET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}
