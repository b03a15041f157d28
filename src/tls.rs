//! TLS material from files: a client certificate with its private key (mutual TLS to the
//! bank) and CA bundles (a bank's or a relay's private CA). Every file is read whole,
//! parsed and checked here, so `check-config`, start-up and a reload all refuse the same
//! bad file with the same message, naming the key and the file. The private key's bytes
//! never reach a message or a log line: errors say only which file and what is wrong.
//!
//! Expiry is checked against a time the caller passes (the Clock's), never the wall
//! clock: an expired client certificate is an error, one that expires within
//! [`EXPIRY_WARNING_DAYS`] is a warning naming the file and the date.

use crate::config::{ConfigError, expand_credentials_dir};
use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// A client certificate this close to its end is reported by `check-config`, at start-up
/// and on every reload.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Largest certificate or key file read (a CA bundle of every public root is ~250 KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// One certificate's validity, for the expiry checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub subject: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// A client certificate chain and its private key, read and checked.
pub struct ClientIdentity {
    /// The certificate file's key and path, for messages.
    pub cert_key: String,
    pub cert_path: PathBuf,
    /// The certificate file then the key file, as PEM (what reqwest's `Identity` reads).
    pem: Vec<u8>,
    leaf: Validity,
}

// Hand-written: the key must never be printed.
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_path", &self.cert_path)
            .field("subject", &self.leaf.subject)
            .field("not_after", &self.leaf.not_after)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Reads `cert_file` (the certificate, then any intermediates) and `key_file` (one
    /// PKCS#8, PKCS#1 or SEC1 private key) and checks that the key belongs to the
    /// certificate. `prefix` is the settings section, e.g. `gateway.http`.
    pub fn load(prefix: &str, cert_file: &Path, key_file: &Path) -> Result<Self, ConfigError> {
        let cert_key = format!("{prefix}.client_cert_file");
        let key_key = format!("{prefix}.client_key_file");
        let (cert_path, cert_pem) = read_pem(&cert_key, cert_file)?;
        let (key_path, key_pem) = read_pem(&key_key, key_file)?;
        let certs = parse_certs(&cert_key, &cert_path, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            ConfigError::invalid(
                &key_key,
                format!(
                    "{} holds no readable private key (PKCS#8, PKCS#1 or SEC1 PEM): {}",
                    key_path.display(),
                    pem_error(&e)
                ),
            )
        })?;
        let leaf = validity(&certs[0]).map_err(|e| {
            ConfigError::invalid(&cert_key, format!("{}: {e}", cert_path.display()))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider.key_provider.load_private_key(key).map_err(|e| {
            ConfigError::invalid(
                &key_key,
                format!("{} is not a usable private key: {e}", key_path.display()),
            )
        })?;
        match rustls::sign::CertifiedKey::new(certs, signing).keys_match() {
            Ok(()) => {}
            // ring cannot tell the public key of every key type; then the handshake is the
            // judge.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(ConfigError::invalid(
                    &key_key,
                    format!(
                        "{} does not belong to the certificate in {}: {e}",
                        key_path.display(),
                        cert_path.display()
                    ),
                ));
            }
        }
        let mut pem = cert_pem;
        pem.push(b'\n');
        pem.extend_from_slice(&key_pem);
        Ok(ClientIdentity {
            cert_key,
            cert_path,
            pem,
            leaf,
        })
    }

    /// The certificate file then the key file, PEM: for reqwest's `Identity::from_pem`.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The end-entity certificate's validity.
    pub fn validity(&self) -> &Validity {
        &self.leaf
    }

    /// An expired (or not yet valid) certificate is an error; one that ends within
    /// [`EXPIRY_WARNING_DAYS`] is a warning.
    pub fn check_expiry(&self, now: DateTime<Utc>) -> Expiry {
        expiry(&self.cert_key, &self.cert_path, &self.leaf, now, true)
    }
}

/// A CA bundle, read and checked: one or more PEM certificates.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub key: String,
    pub path: PathBuf,
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
    validities: Vec<Validity>,
}

impl CaBundle {
    /// Reads `file` for the setting `key` (e.g. `mail.smtp.ca_bundle_file`).
    pub fn load(key: &str, file: &Path) -> Result<Self, ConfigError> {
        let (path, pem) = read_pem(key, file)?;
        let certs = parse_certs(key, &path, &pem)?;
        let validities = certs
            .iter()
            .enumerate()
            .map(|(i, der)| {
                validity(der).map_err(|e| {
                    ConfigError::invalid(
                        key,
                        format!("{}: certificate {}: {e}", path.display(), i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CaBundle {
            key: key.to_string(),
            path,
            pem,
            certs,
            validities,
        })
    }

    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// A CA that expired or ends soon is a warning, not an error: a bundle in the middle
    /// of a CA rotation holds the old CA beside the new one.
    pub fn check_expiry(&self, now: DateTime<Utc>) -> Expiry {
        let mut all = Expiry::default();
        for v in &self.validities {
            let one = expiry(&self.key, &self.path, v, now, false);
            all.errors.extend(one.errors);
            all.warnings.extend(one.warnings);
        }
        all
    }
}

/// What the expiry checks found.
#[derive(Debug, Default)]
pub struct Expiry {
    pub errors: Vec<ConfigError>,
    /// One line each, naming the key, the file and the date.
    pub warnings: Vec<String>,
}

impl Expiry {
    pub fn merge(&mut self, other: Expiry) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }

    /// The warnings, or the errors as one configuration error.
    pub fn into_result(mut self) -> Result<Vec<String>, ConfigError> {
        match self.errors.len() {
            0 => Ok(self.warnings),
            1 => Err(self.errors.remove(0)),
            _ => Err(ConfigError::Many(self.errors)),
        }
    }
}

fn expiry(key: &str, path: &Path, v: &Validity, now: DateTime<Utc>, strict: bool) -> Expiry {
    let mut found = Expiry::default();
    let date = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let text = if now > v.not_after {
        Some(format!(
            "{}: the certificate {} expired on {}",
            path.display(),
            v.subject,
            date(v.not_after)
        ))
    } else if now < v.not_before {
        Some(format!(
            "{}: the certificate {} is not valid before {}",
            path.display(),
            v.subject,
            date(v.not_before)
        ))
    } else {
        None
    };
    match text {
        Some(text) if strict => found.errors.push(ConfigError::invalid(key, text)),
        Some(text) => found.warnings.push(format!("`{key}`: {text}")),
        None => {
            let left = v.not_after - now;
            if left < chrono::Duration::days(EXPIRY_WARNING_DAYS) {
                found.warnings.push(format!(
                    "`{key}`: {}: the certificate {} expires on {} (in {} days); renew it and reload",
                    path.display(),
                    v.subject,
                    date(v.not_after),
                    left.num_days()
                ));
            }
        }
    }
    found
}

/// Reads a PEM file named by `key`, `$CREDENTIALS_DIRECTORY` expanded.
fn read_pem(key: &str, file: &Path) -> Result<(PathBuf, Vec<u8>), ConfigError> {
    use std::io::Read;
    let path = expand_credentials_dir(file);
    let cannot = |e: std::io::Error| {
        ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .map_err(cannot)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} is larger than {} KiB; is it a PEM file?",
                path.display(),
                MAX_PEM_BYTES / 1024
            ),
        ));
    }
    Ok((path, bytes))
}

fn parse_certs(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{}: not readable as PEM: {}", path.display(), pem_error(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    for (i, der) in certs.iter().enumerate() {
        validity(der).map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{}: certificate {}: {e}", path.display(), i + 1),
            )
        })?;
    }
    Ok(certs)
}

/// A PEM error without any of the file's bytes (a key file's base64 is the key).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a section is not valid base64".into(),
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM section found".into(),
        _ => "malformed PEM".into(),
    }
}

/// The subject and validity of a DER certificate.
fn validity(der: &CertificateDer<'_>) -> Result<Validity, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let time = |t: &x509_parser::time::ASN1Time| {
        DateTime::from_timestamp(t.timestamp(), 0).ok_or_else(|| "a date out of range".to_string())
    };
    let validity = cert.validity();
    Ok(Validity {
        subject: format!("\"{}\"", cert.subject()),
        not_before: time(&validity.not_before)?,
        not_after: time(&validity.not_after)?,
    })
}
