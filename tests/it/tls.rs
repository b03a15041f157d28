//! Mutual TLS and private CAs against real parts: a test CA minted at test time (rcgen),
//! the loopback bank of `gateway_http.rs` served over TLS by a server that REQUIRES a
//! client certificate signed by that CA (rustls' WebPkiClientVerifier), an SMTP relay on
//! loopback with STARTTLS on a certificate of the same CA (mailin-embedded), and the real
//! binary's `check-config` on the certificate files.

use crate::gateway_http::{TOKEN, TestBank, money, request, router};
use chrono::Utc;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use repayd::commands::run::Transports;
use repayd::config::Settings;
use repayd::gateway::http::{HttpGateway, HttpGatewaySettings};
use repayd::gateway::{DebitOutcome, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway};
use repayd::mail::{MailError, Mailer, OutgoingEmail, SmtpMailer, SmtpSettings};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    // mailin-embedded builds its server config with the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `days` from now, in rcgen's time type.
fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// A test certificate authority.
struct Ca {
    name: String,
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// A certificate it issued, with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Server,
    Client,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            name: name.to_string(),
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `cn`, valid from a day ago for `days` days from now.
    fn issue(&self, cn: &str, role: Role, days: i64) -> Leaf {
        let names = match role {
            Role::Server => vec!["localhost".to_string(), "127.0.0.1".to_string()],
            Role::Client => vec![],
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.not_before = days_from_now(days.min(0) - 30);
        params.not_after = days_from_now(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Leaf {
    /// Writes the certificate and key to `dir/name.crt` and `dir/name.key`.
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

fn write_ca(dir: &Path, ca: &Ca) -> PathBuf {
    let path = dir.join(format!("{}.pem", ca.name.replace(' ', "-")));
    std::fs::write(&path, &ca.pem).unwrap();
    path
}

/// The bank over TLS, requiring a client certificate signed by `client_ca`.
struct TlsBank {
    base_url: String,
    /// The common name of each client certificate a connection presented, in order.
    clients: Arc<Mutex<Vec<String>>>,
}

impl TlsBank {
    fn last_client(&self) -> Option<String> {
        self.clients.lock().unwrap().last().cloned()
    }
}

async fn start_tls_bank(bank: &TestBank, server: &Leaf, client_ca: &Ca) -> TlsBank {
    let provider = ring();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der.clone()],
            PrivateKeyDer::try_from(server.key_der.clone()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(bank);
    let clients = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&clients);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app, seen) = (acceptor.clone(), app.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                // A client without an acceptable certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
                    let cn = parsed
                        .subject()
                        .iter_common_name()
                        .next()
                        .and_then(|cn| cn.as_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    seen.lock().unwrap().push(cn);
                }
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsBank {
        base_url: format!("https://127.0.0.1:{port}/bank"),
        clients,
    }
}

fn gateway_settings(
    base_url: &str,
    identity: Option<&(PathBuf, PathBuf)>,
    ca_bundle: Option<&Path>,
) -> HttpGatewaySettings {
    let mut s = HttpGatewaySettings::new(base_url, SecretString::from(TOKEN));
    s.connect_timeout_ms = 2_000;
    s.request_timeout_ms = 5_000;
    s.funds_check_retries = 0;
    s.client_cert_file = identity.map(|(c, _)| c.clone());
    s.client_key_file = identity.map(|(_, k)| k.clone());
    s.ca_bundle_file = ca_bundle.map(Path::to_path_buf);
    s
}

#[tokio::test]
async fn the_bank_takes_only_a_client_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let bank_ca = Ca::new("Test Bank CA");
    let other_ca = Ca::new("Another CA");
    let bank_ca_file = write_ca(dir.path(), &bank_ca);
    let other_ca_file = write_ca(dir.path(), &other_ca);
    let server = bank_ca.issue("bank.test", Role::Server, 365);
    let good = bank_ca
        .issue("repayd-client-1", Role::Client, 365)
        .write(dir.path(), "client");
    let stranger = other_ca
        .issue("repayd-stranger", Role::Client, 365)
        .write(dir.path(), "stranger");
    let bank = TestBank::default().with_balance("ACC-1", money("500.00", "CNY"));
    let tls = start_tls_bank(&bank, &server, &bank_ca).await;
    let amount = money("100.00", "CNY");

    // The right certificate: a funds check and a debit, booked once.
    let gw = HttpGateway::new(&gateway_settings(
        &tls.base_url,
        Some(&good),
        Some(&bank_ca_file),
    ))
    .unwrap();
    assert_eq!(
        gw.check_funds("ACC-1", &amount).await.unwrap(),
        FundsAnswer::Available
    );
    let outcome = gw
        .debit(&request("mtls-good", "ACC-1", amount))
        .await
        .unwrap();
    assert!(
        matches!(outcome, DebitOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(bank.bookings("mtls-good"), 1);
    assert_eq!(tls.last_client().as_deref(), Some("repayd-client-1"));

    // No certificate, or one from another CA: the handshake is refused, the error says
    // so (and that nothing was sent: the bank never acts on a request of a handshake it
    // failed), nothing is booked, and the key is settled once the right certificate is
    // back: not found, then booked exactly once.
    for (key, identity) in [("mtls-none", None), ("mtls-stranger", Some(&stranger))] {
        let gw = HttpGateway::new(&gateway_settings(
            &tls.base_url,
            identity,
            Some(&bank_ca_file),
        ))
        .unwrap();
        let err = gw.debit(&request(key, "ACC-1", amount)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, GatewayError::Unavailable(_)),
            "{key}: {err:?}"
        );
        assert!(
            text.contains("refused this client's TLS certificate")
                && text.contains("gateway.http.client_cert_file"),
            "{key}: {text}"
        );
        let lookup = gw.lookup(key).await;
        assert!(
            lookup.is_err(),
            "{key}: look-up without the certificate: {lookup:?}"
        );
        assert_eq!(bank.bookings(key), 0, "{key}");

        let fixed = HttpGateway::new(&gateway_settings(
            &tls.base_url,
            Some(&good),
            Some(&bank_ca_file),
        ))
        .unwrap();
        assert_eq!(fixed.lookup(key).await.unwrap(), LookupOutcome::NotFound);
        for _ in 0..2 {
            let outcome = fixed.debit(&request(key, "ACC-1", amount)).await.unwrap();
            assert!(
                matches!(outcome, DebitOutcome::Succeeded { .. }),
                "{outcome:?}"
            );
        }
        assert_eq!(bank.bookings(key), 1, "{key}");
    }
    assert_eq!(bank.balance("ACC-1"), money("200.00", "CNY"));

    // The bank's private CA is trusted only through the bundle; a bundle of another CA
    // replaces the public roots and trusts nothing else. Nothing reaches the bank.
    let requests = bank.state().requests;
    for bundle in [None, Some(other_ca_file.as_path())] {
        let gw = HttpGateway::new(&gateway_settings(&tls.base_url, Some(&good), bundle)).unwrap();
        match gw.check_funds("ACC-1", &amount).await {
            Err(GatewayError::Unavailable(m)) => {
                assert!(m.contains("certificate"), "{bundle:?}: {m}")
            }
            other => panic!("{bundle:?}: {other:?}"),
        }
    }
    assert_eq!(bank.state().requests, requests);
}

/// A configuration with the HTTP gateway at `base_url` and the given certificate files.
fn write_config(dir: &Path, base_url: &str, gateway_tls: &str, smtp: &str) -> PathBuf {
    let path = dir.join("repayd.toml");
    let mail = if smtp.is_empty() {
        format!(
            "kind = \"outbox\"\noutbox_dir = \"{}\"",
            dir.join("outbox").display()
        )
    } else {
        format!("kind = \"smtp\"\n[mail.smtp]\n{smtp}")
    };
    std::fs::write(
        &path,
        format!(
            r#"
[database]
url = "sqlite://{db}"

[gateway]
kind = "http"

[gateway.http]
base_url = "{base_url}"
token = "{TOKEN}"
{gateway_tls}

[mail]
from = "Repayments <repayments@example.com>"
lender_name = "Example Lending"
{mail}
"#,
            db = dir.join("repayd.db").display()
        ),
    )
    .unwrap();
    path
}

fn tls_keys(identity: &(PathBuf, PathBuf), ca: &Path) -> String {
    format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\nca_bundle_file = \"{}\"",
        identity.0.display(),
        identity.1.display(),
        ca.display()
    )
}

/// What a reload does to the gateway (`Transports`, the part of `repayd reload` and
/// SIGHUP that concerns the transports): a rotated certificate is used from the next
/// request on; an unreadable, mismatched or expired one is refused and the one in force
/// stays; one that ends within 30 days is taken with a warning naming file and date.
#[tokio::test]
async fn a_rotated_client_certificate_is_used_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let bank_ca = Ca::new("Test Bank CA");
    let bank_ca_file = write_ca(dir.path(), &bank_ca);
    let server = bank_ca.issue("bank.test", Role::Server, 365);
    let bank = TestBank::default().with_balance("ACC-1", money("500.00", "CNY"));
    let tls = start_tls_bank(&bank, &server, &bank_ca).await;
    // The files an operator rotates in place.
    let files = bank_ca
        .issue("repayd-client-1", Role::Client, 365)
        .write(dir.path(), "client");
    let config = write_config(
        dir.path(),
        &tls.base_url,
        &tls_keys(&files, &bank_ca_file),
        "",
    );
    let settings = Settings::load(&config).unwrap();
    let gw = Arc::new(HttpGateway::new(settings.gateway.http.as_ref().unwrap()).unwrap());
    let transports = Transports {
        gateway: Some(Arc::clone(&gw)),
        smtp: None,
    };
    let now = Utc::now();
    debit(&gw, "rotation-1").await;
    assert_eq!(tls.last_client().as_deref(), Some("repayd-client-1"));

    // Rotated in place, then reloaded.
    bank_ca
        .issue("repayd-client-2", Role::Client, 365)
        .write(dir.path(), "client");
    let rotated = Settings::load(&config).unwrap();
    assert_eq!(
        transports.reload(&rotated, now).unwrap(),
        Vec::<String>::new()
    );
    debit(&gw, "rotation-2").await;
    assert_eq!(tls.last_client().as_deref(), Some("repayd-client-2"));

    // A half-done rotation (the key of another certificate): the reload is refused,
    // naming the key file, and the certificate in force stays.
    let other_key = bank_ca.issue("x", Role::Client, 365).key_pem;
    std::fs::write(&files.1, &other_key).unwrap();
    let err = Settings::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("`gateway.http.client_key_file`") && err.contains("does not belong"),
        "{err}"
    );
    assert!(
        !err.contains(other_key.lines().nth(1).unwrap()),
        "the key was shown: {err}"
    );
    let err = transports.reload(&rotated, now).unwrap_err().to_string();
    assert!(err.contains("client_key_file"), "{err}");
    std::fs::write(&files.1, "not a key").unwrap();
    assert!(transports.reload(&rotated, now).is_err());
    debit(&gw, "rotation-3").await;
    assert_eq!(tls.last_client().as_deref(), Some("repayd-client-2"));

    // An expired certificate is refused too.
    bank_ca
        .issue("repayd-client-expired", Role::Client, -2)
        .write(dir.path(), "client");
    let err = transports
        .reload(&Settings::load(&config).unwrap(), now)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`gateway.http.client_cert_file`") && err.contains("expired on"),
        "{err}"
    );
    debit(&gw, "rotation-4").await;
    assert_eq!(tls.last_client().as_deref(), Some("repayd-client-2"));

    // One that ends in 10 days is taken, with a warning naming the file and the date.
    bank_ca
        .issue("repayd-client-3", Role::Client, 10)
        .write(dir.path(), "client");
    let warnings = transports
        .reload(&Settings::load(&config).unwrap(), now)
        .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let expected_date = (now + chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        warnings[0].contains(&files.0.display().to_string())
            && warnings[0].contains(&expected_date)
            && warnings[0].contains("`gateway.http.client_cert_file`"),
        "{warnings:?}"
    );
    debit(&gw, "rotation-5").await;
    assert_eq!(tls.last_client().as_deref(), Some("repayd-client-3"));
    assert_eq!(bank.balance("ACC-1"), money("450.00", "CNY"));
}

/// One debit of 10.00 under `key`, which must succeed.
async fn debit(gw: &HttpGateway, key: &str) {
    let outcome = gw
        .debit(&request(key, "ACC-1", money("10.00", "CNY")))
        .await
        .unwrap();
    assert!(
        matches!(outcome, DebitOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
}

fn check_config(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_repayd"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check-config` reads every certificate file: a good set passes, one ending within 30
/// days is a warning naming the file and the date, an expired one, a key of another
/// certificate or a file that is not PEM exit 78 naming the key, and no key material is
/// ever printed.
#[test]
fn check_config_validates_certificates_and_warns_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("Test Bank CA");
    let ca_file = write_ca(d, &ca);
    let base = "https://bank.example/repay/";
    let good = ca
        .issue("repayd-client", Role::Client, 365)
        .write(d, "good");
    let (code, out, err) = check_config(&write_config(d, base, &tls_keys(&good, &ca_file), ""));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("configuration OK") && !err.contains("warning"),
        "{err}"
    );

    let soon_leaf = ca.issue("repayd-client", Role::Client, 12);
    let soon = soon_leaf.write(d, "soon");
    let (code, _, err) = check_config(&write_config(d, base, &tls_keys(&soon, &ca_file), ""));
    assert_eq!(code, 0, "{err}");
    let date = (Utc::now() + chrono::Duration::days(12))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        err.contains("warning")
            && err.contains(&soon.0.display().to_string())
            && err.contains(&date),
        "{err}"
    );

    let expired = ca
        .issue("repayd-client", Role::Client, -1)
        .write(d, "expired");
    let (code, _, err) = check_config(&write_config(d, base, &tls_keys(&expired, &ca_file), ""));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("`gateway.http.client_cert_file`") && err.contains("expired on"),
        "{err}"
    );

    let mismatched = (good.0.clone(), soon.1.clone());
    let (code, _, err) = check_config(&write_config(d, base, &tls_keys(&mismatched, &ca_file), ""));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("`gateway.http.client_key_file`") && err.contains("does not belong"),
        "{err}"
    );

    let not_pem = d.join("not-pem.crt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let broken = (not_pem.clone(), good.1.clone());
    let (code, _, err) = check_config(&write_config(d, base, &tls_keys(&broken, &ca_file), ""));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("`gateway.http.client_cert_file`") && err.contains("no certificate"),
        "{err}"
    );
    let (code, _, err) = check_config(&write_config(d, base, &tls_keys(&good, &not_pem), ""));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`gateway.http.ca_bundle_file`"), "{err}");
    let smtp = format!(
        "host = \"smtp.example.com\"\nca_bundle_file = \"{}\"",
        not_pem.display()
    );
    let (code, _, err) = check_config(&write_config(d, base, &tls_keys(&good, &ca_file), &smtp));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`mail.smtp.ca_bundle_file`"), "{err}");

    // The key's base64 never reaches the output, whatever went wrong.
    let secret_line = soon_leaf.key_pem.lines().nth(1).unwrap();
    for config in [tls_keys(&mismatched, &ca_file), tls_keys(&soon, &ca_file)] {
        let (_, out, err) = check_config(&write_config(d, base, &config, ""));
        assert!(!out.contains(secret_line) && !err.contains(secret_line));
    }
}

// ---------------------------------------------------------------------------------------
// SMTP with STARTTLS on the test CA.

#[derive(Clone, Default)]
struct Counter(Arc<Mutex<usize>>);

impl mailin_embedded::Handler for Counter {
    fn data_end(&mut self) -> mailin_embedded::Response {
        *self.0.lock().unwrap() += 1;
        mailin_embedded::response::OK
    }
}

fn smtp_settings(port: u16, ca_bundle: Option<&Path>) -> SmtpSettings {
    let ca = ca_bundle
        .map(|p| format!("ca_bundle_file = \"{}\"", p.display()))
        .unwrap_or_default();
    toml::from_str(&format!(
        "host = \"localhost\"\nport = {port}\ntls = \"starttls\"\ntimeout_seconds = 5\nretry_delays_ms = []\n{ca}"
    ))
    .unwrap()
}

fn email(n: u32) -> OutgoingEmail {
    OutgoingEmail {
        to: "li.wei@example.com".into(),
        to_name: "Li Wei".into(),
        subject: format!("Test {n}"),
        text: "Hello".into(),
        html: String::new(),
        message_id: format!("tls-test-{n}@example.com"),
        locale: "en".into(),
    }
}

/// A relay whose STARTTLS certificate comes from an internal CA: reached with
/// `ca_bundle_file`, refused without it (the public roots do not know that CA), and a
/// reload that adds the bundle makes the same mailer reach it.
#[tokio::test]
async fn an_smtp_relay_on_a_private_ca_is_reached_through_the_ca_bundle() {
    ring();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Mail CA");
    let ca_file = write_ca(dir.path(), &ca);
    let (cert, key) = ca
        .issue("smtp.test", Role::Server, 365)
        .write(dir.path(), "relay");
    let counter = Counter::default();
    let mut server = mailin_embedded::Server::new(counter.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    server
        .with_name("smtp.test")
        .with_ssl(mailin_embedded::SslConfig::SelfSigned {
            cert_path: cert.display().to_string(),
            key_path: key.display().to_string(),
        })
        .unwrap()
        .with_num_threads(4)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    let from: lettre::message::Mailbox = "Repayments <repayments@example.com>".parse().unwrap();

    let trusted = SmtpMailer::new(&smtp_settings(port, Some(&ca_file)), from.clone()).unwrap();
    trusted.send(&email(1)).await.unwrap();
    assert_eq!(*counter.0.lock().unwrap(), 1);

    let untrusted = SmtpMailer::new(&smtp_settings(port, None), from).unwrap();
    match untrusted.send(&email(2)).await {
        Err(MailError::Transient(m)) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
        other => panic!("without the bundle: {other:?}"),
    }
    assert_eq!(*counter.0.lock().unwrap(), 1);

    // A broken bundle is refused and changes nothing; the right one is picked up.
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let err = untrusted
        .reload_tls(&smtp_settings(port, Some(&broken)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`mail.smtp.ca_bundle_file`"), "{err}");
    assert!(untrusted.send(&email(3)).await.is_err());
    untrusted
        .reload_tls(&smtp_settings(port, Some(&ca_file)))
        .unwrap();
    untrusted.send(&email(4)).await.unwrap();
    assert_eq!(*counter.0.lock().unwrap(), 2);
}
