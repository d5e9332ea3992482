-- PostgreSQL and SQLite. Times are UTC milliseconds since the Unix epoch in BIGINT columns, so that every backend
-- and every time zone reads them the same way.

-- One token per credential key. `token` is the plaintext token when `nonce` is NULL, otherwise the base64 of its
-- AES-256-GCM ciphertext (with the credential key as associated data) and `nonce` the base64 of the nonce.
CREATE TABLE IF NOT EXISTS paynet_tokens (
    credential_key VARCHAR(255) NOT NULL PRIMARY KEY,
    token TEXT NOT NULL,
    nonce TEXT,
    generation BIGINT NOT NULL,
    obtained_at BIGINT NOT NULL,
    expires_at BIGINT,
    agent_id TEXT,
    terminal_id TEXT,
    user_id TEXT,
    user_login TEXT,
    written_by VARCHAR(255) NOT NULL
);

-- The refresh lease, with ShedLock's columns; `name` is the credential key.
CREATE TABLE IF NOT EXISTS paynet_lease (
    name VARCHAR(255) NOT NULL PRIMARY KEY,
    lock_until BIGINT NOT NULL,
    locked_at BIGINT NOT NULL,
    locked_by VARCHAR(255) NOT NULL
);
