//! Tells the tests which backend servers they were built to reach. With `REDIS_URL`,
//! `REDIS_CLUSTER_URL`, `DATABASE_URL` (or the TLS servers' variables) unset, the tests that need that server are reported by `cargo test` as
//! ignored, with the reason, instead of passing without running. The library itself
//! reads neither variable: the cfgs below are used by the tests only.

fn main() {
    // The triple being built for: the tests build the examples for it too.
    if let Ok(target) = std::env::var("TARGET") {
        println!("cargo::rustc-env=TEST_TARGET={target}");
    }
    for (var, cfg) in [
        ("REDIS_URL", "redis_url_unset"),
        ("REDIS_CLUSTER_URL", "redis_cluster_url_unset"),
        ("DATABASE_URL", "database_url_unset"),
        ("REDIS_TLS_URL", "redis_tls_url_unset"),
        ("REDIS_TLS_CLUSTER_URL", "redis_tls_cluster_url_unset"),
        ("DATABASE_TLS_URL", "database_tls_url_unset"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={var}");
        let unset = std::env::var_os(var).is_none_or(|value| value.is_empty());
        if unset {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
