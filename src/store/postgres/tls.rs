//! The URL's `sslmode` and `sslrootcert`, read as libpq reads them, for the pool
//! [`PostgresStore::connect`](super::PostgresStore::connect) opens. tokio-postgres knows
//! only `disable`, `prefer` and `require`, and no root certificates: both parameters are
//! taken out of the URL here, and the TLS connector (rustls, feature `postgres-tls`)
//! built from them.

use crate::store::{StoreError, StoreErrorKind};

/// What the URL asks of the connection's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// No `sslmode`, `disable`, `allow` or `prefer` without the feature: plain TCP.
    Plain,
    /// `prefer` (with the feature) and `require`: encrypted, the certificate not
    /// verified (libpq's meaning) unless `sslrootcert` is given, which makes `require`
    /// `verify-ca`.
    Encrypt { prefer: bool },
    /// `verify-ca`: the certificate chains to a trusted root; its name is not checked.
    VerifyCa,
    /// `verify-full`: the certificate chains to a trusted root and names the host.
    VerifyFull,
}

/// The URL without `sslmode` and `sslrootcert`, what they ask, and the root
/// certificate file (`None`: the system's roots).
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) url: String,
    pub(super) mode: Mode,
    #[cfg(feature = "postgres-tls")]
    pub(super) root_cert: Option<String>,
}

fn refuse(why: String) -> StoreError {
    StoreError::new(StoreErrorKind::Configuration, why)
}

pub(super) fn settings(url: &str) -> Result<Settings, StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut sslmode, mut root_cert, mut system) = (None, None, false);
    if query.contains('?') {
        return Err(refuse(
            "the URL has a second '?': join its parameters with '&'".to_owned(),
        ));
    }
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => sslmode = Some(value.to_owned()),
            Some(("sslrootcert", value)) if value != "system" => {
                root_cert = Some(percent_decoded(value)?);
            }
            Some(("sslrootcert", _)) => system = true,
            _ => kept.push(pair),
        }
    }
    let tls = cfg!(feature = "postgres-tls");
    let mode = match sslmode.as_deref() {
        None | Some("disable") => Mode::Plain,
        Some("allow" | "prefer") if !tls => Mode::Plain,
        Some("allow" | "prefer") => Mode::Encrypt { prefer: true },
        Some("require") if root_cert.is_some() => Mode::VerifyCa,
        Some("require") => Mode::Encrypt { prefer: false },
        Some("verify-ca") => Mode::VerifyCa,
        Some("verify-full") => Mode::VerifyFull,
        Some(other) => {
            return Err(refuse(format!(
                "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    if mode == Mode::VerifyCa && root_cert.is_none() {
        return Err(refuse(
            "sslmode=verify-ca trusts any certificate a system authority signed, for any name: give sslrootcert=PATH, or use verify-full".to_owned(),
        ));
    }
    if mode == Mode::Plain && root_cert.is_some() {
        return Err(refuse(format!(
            "sslrootcert asks for a verified certificate, but sslmode={} connects without TLS: add sslmode=verify-full",
            sslmode.as_deref().unwrap_or("(none)")
        )));
    }
    if system && mode != Mode::VerifyFull {
        return Err(refuse(
            "sslrootcert=system trusts every public authority: it needs sslmode=verify-full"
                .to_owned(),
        ));
    }
    if mode != Mode::Plain && !tls {
        return Err(refuse(format!(
            "sslmode={}: this build has no TLS for PostgreSQL (enable the feature postgres-tls)",
            sslmode.unwrap_or_default()
        )));
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Settings {
        url,
        mode,
        #[cfg(feature = "postgres-tls")]
        root_cert,
    })
}

fn percent_decoded(value: &str) -> Result<String, StoreError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| refuse(format!("sslrootcert={value}: a malformed %-escape")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| refuse(format!("sslrootcert={value}: not UTF-8")))
}

/// The pool's connection manager for `config`, with TLS as `settings` ask.
pub(super) fn manager(
    #[allow(unused_mut)] mut config: tokio_postgres::Config,
    settings: &Settings,
) -> Result<deadpool_postgres::Manager, StoreError> {
    use deadpool_postgres::Manager;
    #[cfg(feature = "postgres-tls")]
    {
        use tokio_postgres::config::SslMode;
        let ssl_mode = match settings.mode {
            Mode::Plain => return Ok(Manager::new(config, tokio_postgres::NoTls)),
            Mode::Encrypt { prefer: true } => SslMode::Prefer,
            Mode::Encrypt { prefer: false } | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        };
        config.ssl_mode(ssl_mode);
        Ok(Manager::new(config, connector(settings)?))
    }
    #[cfg(not(feature = "postgres-tls"))]
    match settings.mode {
        Mode::Plain => Ok(Manager::new(config, tokio_postgres::NoTls)),
        _ => Err(refuse(
            "this build has no TLS for PostgreSQL (enable the feature postgres-tls)".to_owned(),
        )),
    }
}

/// The rustls connector for `settings` (roots from `sslrootcert`, else the system's).
#[cfg(feature = "postgres-tls")]
pub(super) fn connector(
    settings: &Settings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use std::sync::Arc;

    use rustls::{client::WebPkiServerVerifier, pki_types::pem::PemObject, RootCertStore};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &settings.root_cert {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|err| refuse(format!("sslrootcert={path}: {err}")))?;
            for cert in certs {
                let cert = cert.map_err(|err| refuse(format!("sslrootcert={path}: {err}")))?;
                roots
                    .add(cert)
                    .map_err(|err| refuse(format!("sslrootcert={path}: {err}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| refuse(err.to_string()))?;
    let verified =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build();
    let config = match settings.mode {
        Mode::VerifyFull => builder
            .with_webpki_verifier(verified.map_err(|err| refuse(err.to_string()))?)
            .with_no_client_auth(),
        Mode::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(super::verifiers::ChainOnly(
                verified.map_err(|err| refuse(err.to_string()))?,
            )))
            .with_no_client_auth(),
        Mode::Encrypt { .. } | Mode::Plain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(super::verifiers::Unverified(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let plain = settings("postgres://u@h/db").unwrap();
        assert_eq!(
            (plain.url.as_str(), plain.mode),
            ("postgres://u@h/db", Mode::Plain)
        );
        let other = settings("postgres://u@h/db?application_name=x&sslmode=disable").unwrap();
        assert_eq!(other.url, "postgres://u@h/db?application_name=x");
        assert_eq!(other.mode, Mode::Plain);
        for refused in [
            "postgres://h/db?application_name=x?sslmode=verify-full",
            "postgres://h/db?sslrootcert=/ca.pem",
            "postgres://h/db?sslmode=disable&sslrootcert=/ca.pem",
        ] {
            assert_eq!(
                settings(refused).unwrap_err().kind(),
                StoreErrorKind::Configuration,
                "{refused}"
            );
        }
        assert_eq!(
            settings("postgres://h/db?sslmode=bogus")
                .unwrap_err()
                .kind(),
            StoreErrorKind::Configuration
        );
    }

    #[cfg(feature = "postgres-tls")]
    #[test]
    fn tls_modes_read_as_libpq_reads_them() {
        {
            let full =
                settings("postgres://h/db?sslmode=verify-full&sslrootcert=/a%20b/ca.pem").unwrap();
            assert_eq!(full.url, "postgres://h/db");
            assert_eq!(full.mode, Mode::VerifyFull);
            assert_eq!(full.root_cert.as_deref(), Some("/a b/ca.pem"));
            let unrooted = settings("postgres://h/db?sslmode=verify-ca");
            assert_eq!(unrooted.unwrap_err().kind(), StoreErrorKind::Configuration);
            let signed = settings("postgres://h/db?sslmode=verify-full&sslrootcert=%+5");
            assert_eq!(signed.unwrap_err().kind(), StoreErrorKind::Configuration);
            let require = settings("postgres://h/db?sslmode=require&sslrootcert=ca.pem").unwrap();
            assert_eq!(require.mode, Mode::VerifyCa);
            let weak = settings("postgres://h/db?sslmode=require&sslrootcert=system");
            assert_eq!(weak.unwrap_err().kind(), StoreErrorKind::Configuration);
            let system =
                settings("postgres://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
            assert_eq!((system.mode, system.root_cert), (Mode::VerifyFull, None));
        }
    }

    #[cfg(not(feature = "postgres-tls"))]
    #[test]
    fn tls_without_the_feature_is_refused() {
        let err = settings("postgres://h/db?sslmode=verify-full").unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Configuration);
        assert!(err.to_string().contains("postgres-tls"), "{err}");
    }
}
