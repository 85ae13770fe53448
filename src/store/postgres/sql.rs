//! The SQL of [`PostgresStore`](super::PostgresStore), with its table name in place.

/// How many expired rows one sweep statement deletes at most.
pub(super) const SWEEP_BATCH: i64 = 1_000;

/// The statements, with the table name in place.
pub(super) struct Statements {
    pub(super) table: String,
    pub(super) claim: String,
    pub(super) take_over: String,
    pub(super) complete: String,
    /// `complete`, returning a row for the record it completed (for a transaction's
    /// completion, counted by the caller).
    pub(super) complete_returning: String,
    pub(super) release: String,
    pub(super) renew: String,
    pub(super) get: String,
    pub(super) sweep: String,
}

impl Statements {
    pub(super) fn new(table: &str) -> Self {
        let live = "key = $1 AND token = $2 AND expires_at > now()";
        let complete = format!(
            "UPDATE {table} SET response = $3, token = NULL, version = $4,
                expires_at = now() + $5::int8 * interval '1 millisecond'
             WHERE {live}"
        );
        Self {
            table: table.to_owned(),
            claim: format!(
                "WITH claimed AS (
                    INSERT INTO {table} (key, fingerprint, token, response, version, expires_at)
                    VALUES ($1, $2, $3, NULL, $4, now() + $5::int8 * interval '1 millisecond')
                    ON CONFLICT (key) DO NOTHING
                    RETURNING 1
                )
                SELECT 'claimed' AS state, NULL::bytea AS fingerprint, NULL::bytea AS response, NULL::smallint AS version, NULL::bytea AS token
                FROM claimed
                UNION ALL
                SELECT CASE WHEN expires_at <= now() THEN 'expired'
                            WHEN token = $3 THEN 'own'
                            ELSE 'live' END, fingerprint, response, version, token
                FROM {table} WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM claimed)"
            ),
            take_over: format!(
                "UPDATE {table} SET fingerprint = $2, token = $3, response = NULL, version = $4,
                    expires_at = now() + $5::int8 * interval '1 millisecond'
                 WHERE key = $1 AND expires_at <= now()"
            ),
            // In the handler's transaction `now()` is when it began: the lease and the
            // record's TTL are measured from the statement's own time instead.
            complete_returning: format!(
                "UPDATE {table} SET response = $3, token = NULL, version = $4,
                    expires_at = clock_timestamp() + $5::int8 * interval '1 millisecond'
                 WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp()
                 RETURNING 1"
            ),
            complete,
            release: format!("DELETE FROM {table} WHERE {live}"),
            renew: format!("UPDATE {table} SET expires_at = now() + $3::int8 * interval '1 millisecond' WHERE {live}"),
            get: format!(
                "SELECT fingerprint, response, version, token FROM {table} WHERE key = $1 AND expires_at > now()"
            ),
            sweep: format!(
                "DELETE FROM {table} WHERE key IN (
                    SELECT key FROM {table} WHERE expires_at <= now() LIMIT {SWEEP_BATCH}
                    FOR UPDATE SKIP LOCKED)"
            ),
        }
    }
}

/// Whether `name` is a table name we put into SQL: an identifier, optionally
/// schema-qualified, of lower-case letters, digits and underscores.
pub(super) fn valid_table_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_table_name;

    #[test]
    fn table_names_are_validated() {
        for good in ["idempotency_records", "_t1", "app.idem_records"] {
            assert!(valid_table_name(good), "{good}");
        }
        for bad in [
            "",
            "Records",
            "1table",
            "t; DROP TABLE x",
            "a.b.c",
            "t-1",
            "\"t\"",
            &"t".repeat(64),
        ] {
            assert!(!valid_table_name(bad), "{bad}");
        }
    }
}
