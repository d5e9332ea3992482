-- MySQL and MariaDB: the same tables as migrations/portable, except that the keys are VARBINARY. The default
-- collations compare case-insensitively (utf8mb4_general_ci) and the `_bin` ones ignore trailing spaces, either of
-- which would let two distinct credential keys share one row (and one token).
CREATE TABLE IF NOT EXISTS paynet_tokens (
    credential_key VARBINARY(255) NOT NULL PRIMARY KEY,
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
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS paynet_lease (
    name VARBINARY(255) NOT NULL PRIMARY KEY,
    lock_until BIGINT NOT NULL,
    locked_at BIGINT NOT NULL,
    locked_by VARBINARY(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
