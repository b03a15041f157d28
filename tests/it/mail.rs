//! The mailers against a real SMTP listener on loopback (mailin-embedded, which can be told
//! to answer 4xx or 5xx) and a real outbox directory. Messages are decoded the way a mail
//! client would (RFC 2047 headers, quoted-printable or base64 parts) before asserting.

use mailin_embedded::{Handler, Response, Server, response};
use repayd::mail::{
    EmailKind, Locale, MailError, MailSettings, Mailer, OutgoingEmail, TemplateContext, Templates,
    build_mailer, message_id,
};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------
// A recording SMTP listener.

/// A message as the listener received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) data: Vec<u8>,
}

#[derive(Default)]
struct Log {
    /// Replies to give to the next RCPT commands, in order; then 250.
    rcpt_replies: VecDeque<Response>,
    rcpt_calls: usize,
    messages: Vec<Received>,
}

/// Cloned by mailin for every connection: `log` is shared, the rest is per connection.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Log>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

// Replies are given at RCPT, as real relays do for unknown mailboxes (5xx) and for
// greylisting (4xx). mailin stays in its DATA state after a negative reply to the final
// dot, so a rejection there would leave lettre's QUIT unanswered.
impl Handler for Recorder {
    fn rcpt(&mut self, _to: &str) -> Response {
        let mut log = self.log.lock().unwrap();
        log.rcpt_calls += 1;
        log.rcpt_replies.pop_front().unwrap_or(response::OK)
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_string();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.log.lock().unwrap().messages.push(Received {
            from: self.from.clone(),
            to: self.to.clone(),
            data: std::mem::take(&mut self.data),
        });
        response::OK
    }
}

/// A listener on 127.0.0.1 and a free port; it serves until the test process ends.
pub(crate) struct SmtpListener {
    port: u16,
    log: Arc<Mutex<Log>>,
}

impl SmtpListener {
    pub(crate) fn start() -> SmtpListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let recorder = Recorder::default();
        let log = recorder.log.clone();
        let mut server = Server::new(recorder);
        // lettre keeps pooled connections open and mailin gives each a thread: enough
        // threads that idle pooled sessions never starve a new one.
        server
            .with_name("smtp.test")
            .with_num_threads(16)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            // serve() only returns on a listener error; say it, the test will then fail.
            if let Err(e) = server.serve() {
                eprintln!("SMTP test listener stopped: {e}");
            }
        });
        SmtpListener { port, log }
    }

    pub(crate) fn reply_to_next_rcpt(&self, code: u16, text: &str) {
        self.log
            .lock()
            .unwrap()
            .rcpt_replies
            .push_back(Response::custom(code, text.to_string()));
    }

    pub(crate) fn messages(&self) -> Vec<Received> {
        self.log.lock().unwrap().messages.clone()
    }

    fn rcpt_calls(&self) -> usize {
        self.log.lock().unwrap().rcpt_calls
    }

    /// Mail settings for this listener, through the same TOML an operator writes.
    fn settings(&self, retry_delays_ms: &str) -> MailSettings {
        toml::from_str(&format!(
            r#"
            kind = "smtp"
            from = "Example Finance <repayments@example.com>"
            lender_name = "Example Finance"
            [smtp]
            host = "127.0.0.1"
            port = {}
            tls = "none"
            timeout_seconds = 5
            rate_per_second = 100
            retry_delays_ms = {retry_delays_ms}
            "#,
            self.port
        ))
        .expect("valid mail settings")
    }

    pub(crate) fn mailer(&self, retry_delays_ms: &str) -> Arc<dyn Mailer> {
        let settings = self.settings(retry_delays_ms);
        assert!(settings.check().is_empty(), "{:?}", settings.check());
        build_mailer(&settings).expect("mailer builds")
    }
}

// ---------------------------------------------------------------------------------------
// Reading a message as a mail client would.

/// A parsed message: unfolded, decoded headers and the decoded text of each MIME part.
pub(crate) struct Parsed {
    headers: Vec<(String, String)>,
    raw_headers: String,
    parts: Vec<(String, String)>,
}

impl Parsed {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The Subject header, RFC 2047 decoded.
    pub(crate) fn subject(&self) -> String {
        decode_rfc2047(&self.header("Subject").unwrap_or_default())
    }

    pub(crate) fn part(&self, content_type: &str) -> &str {
        self.parts
            .iter()
            .find(|(ct, _)| ct.starts_with(content_type))
            .map(|(_, body)| body.as_str())
            .unwrap_or_else(|| panic!("no {content_type} part"))
    }
}

pub(crate) fn parse(raw: &[u8]) -> Parsed {
    let text = String::from_utf8(raw.to_vec()).expect("message is UTF-8 (in fact ASCII)");
    assert!(
        text.is_ascii(),
        "lettre encodes everything for 7-bit transport"
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let headers = parse_headers(head);
    let content_type = lookup(&headers, "Content-Type").expect("content type");
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"')
        .to_string();
    let mut parts = Vec::new();
    for chunk in body.split(&format!("--{boundary}")).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let chunk = chunk.trim_start_matches("\r\n");
        let (part_head, part_body) = chunk.split_once("\r\n\r\n").expect("part headers end");
        let part_headers = parse_headers(part_head);
        let ct = lookup(&part_headers, "Content-Type").expect("part content type");
        let cte = lookup(&part_headers, "Content-Transfer-Encoding").unwrap_or_default();
        let bytes = match cte.to_ascii_lowercase().as_str() {
            "base64" => base64_decode(part_body),
            "quoted-printable" => qp_decode(part_body),
            _ => part_body.as_bytes().to_vec(),
        };
        let decoded = String::from_utf8(bytes).expect("part is UTF-8");
        parts.push((ct, decoded.replace("\r\n", "\n")));
    }
    Parsed {
        headers: headers
            .into_iter()
            .map(|(n, v)| (n, decode_rfc2047(&v)))
            .collect(),
        raw_headers: head.to_string(),
        parts,
    }
}

fn lookup(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            // RFC 5322 unfolding: the CRLF goes, the whitespace stays.
            headers
                .last_mut()
                .expect("folded first line")
                .1
                .push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("header has a colon");
            headers.push((name.to_string(), value.trim_start().to_string()));
        }
    }
    headers
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 digit") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn qp_decode(s: &str) -> Vec<u8> {
    let s = s.replace("=\r\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("qp hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Decodes `=?utf-8?b?...?=` and `=?utf-8?q?...?=` words; whitespace between two encoded
/// words is dropped, as RFC 2047 says.
fn decode_rfc2047(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        let after = &rest[start + 2..];
        let mut fields = after.splitn(3, '?');
        let (_charset, encoding, tail) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let end = tail.find("?=").expect("encoded word ends");
        let payload = &tail[..end];
        let bytes = if encoding.eq_ignore_ascii_case("b") {
            base64_decode(payload)
        } else {
            qp_decode(&payload.replace('_', " "))
        };
        out.push_str(&String::from_utf8(bytes).expect("UTF-8 word"));
        rest = &tail[end + 2..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// The emails.

fn upcoming(locale: Locale, name: &str) -> (OutgoingEmail, TemplateContext) {
    use repayd::domain::{Currency, Money};
    let cny = Currency::parse("CNY").unwrap();
    let due = chrono::NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
    let top_up_by = due.pred_opt().unwrap().and_hms_opt(18, 0, 0).unwrap();
    let settings: MailSettings = toml::from_str(
        "from = \"Example Finance <repayments@example.com>\"\nlender_name = \"Example Finance\"",
    )
    .unwrap();
    let mut ctx = settings.base_context();
    ctx.customer_name = name.to_string();
    ctx.agreement_ref = "AGR-2025-0042".into();
    ctx.installment_seq = 3;
    ctx.installment_count = 12;
    ctx.amount = locale.money(&Money::parse("1066.19", cny).unwrap());
    ctx.currency = "CNY".into();
    ctx.due_date = locale.date(due);
    ctx.due_date_short = locale.date_short(due);
    ctx.set_account("6222020200113000");
    ctx.funds_sufficient = Some(false);
    ctx.shortfall = Some(locale.money(&Money::parse("120.50", cny).unwrap()));
    ctx.top_up_by = Some(locale.date_time(top_up_by));
    ctx.top_up_by_short = Some(locale.date_time_short(top_up_by));
    let rendered = Templates::load(None)
        .unwrap()
        .render_in(EmailKind::Upcoming, locale, &ctx)
        .unwrap();
    let id = message_id(
        "3f9a0c1d2b4e",
        123,
        EmailKind::Upcoming.as_str(),
        7,
        &settings.message_id_domain(),
    );
    (
        rendered.into_outgoing("li.wei@example.com", name, id, locale),
        ctx,
    )
}

// ---------------------------------------------------------------------------------------
// SMTP.

#[tokio::test]
async fn smtp_delivers_a_readable_chinese_reminder() {
    let smtp = SmtpListener::start();
    let mailer = smtp.mailer("[10]");
    let (email, _) = upcoming(Locale::ZhCn, "李伟");
    mailer.send(&email).await.expect("delivered");

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let received = &messages[0];
    assert_eq!(received.from, "repayments@example.com");
    assert_eq!(received.to, ["li.wei@example.com"]);
    let msg = parse(&received.data);
    assert_eq!(
        msg.header("Message-ID").as_deref(),
        Some("<repayd.3f9a0c1d2b4e.i123.upcoming.7@example.com>")
    );
    assert_eq!(
        msg.header("Subject").as_deref(),
        Some(email.subject.as_str())
    );
    assert_eq!(email.subject, "请充值¥120.50：1月31日将扣款¥1,066.19");
    assert!(
        msg.raw_headers.contains("Subject: =?utf-8?"),
        "non-ASCII subject is encoded"
    );
    assert_eq!(
        msg.header("To").as_deref(),
        Some("李伟 <li.wei@example.com>")
    );
    assert_eq!(
        msg.header("From").as_deref(),
        Some("\"Example Finance\" <repayments@example.com>")
    );
    assert_eq!(msg.header("Content-Language").as_deref(), Some("zh-CN"));
    assert!(msg.header("Date").is_some());

    let text = msg.part("text/plain; charset=utf-8");
    assert!(
        text.contains("您本期应还¥1,066.19，还款日为2026年1月31日（星期六）。"),
        "{text}"
    );
    assert!(
        text.contains("您尾号3000的账户目前还差¥120.50，请在2026年1月30日（星期五）18:00前充值")
    );
    assert!(
        !text.contains("6222020200113000"),
        "the full account never leaves"
    );
    let html = msg.part("text/html; charset=utf-8");
    assert!(html.contains("目前还差<strong>¥120.50</strong>"), "{html}");
    assert!(html.contains("max-width:600px"));
}

#[tokio::test]
async fn smtp_never_lets_a_name_or_subject_add_a_header() {
    let smtp = SmtpListener::start();
    let mailer = smtp.mailer("[10]");
    let (mut email, _) = upcoming(Locale::En, "Eve\r\nBcc: victim@evil.example");
    email.subject = "Hello\r\nBcc: x@evil.example\r\n\r\nInjected body".into();
    mailer.send(&email).await.expect("delivered");

    let received = &smtp.messages()[0];
    assert_eq!(
        received.to,
        ["li.wei@example.com"],
        "one envelope recipient only"
    );
    let msg = parse(&received.data);
    for (name, _) in &msg.headers {
        assert!(!name.eq_ignore_ascii_case("Bcc"), "injected header {name}");
    }
    assert_eq!(
        msg.header("Subject").as_deref(),
        Some("Hello Bcc: x@evil.example Injected body")
    );
    let to = msg.header("To").unwrap();
    assert!(
        to.ends_with("<li.wei@example.com>") && !to.contains('\n'),
        "{to}"
    );
    // In the body the name is just text.
    assert!(
        msg.part("text/plain")
            .contains("Hi Eve\nBcc: victim@evil.example,")
    );
}

#[tokio::test]
async fn smtp_retries_a_temporary_refusal_and_delivers_once() {
    let smtp = SmtpListener::start();
    smtp.reply_to_next_rcpt(451, "4.7.1 Greylisted, try again later");
    smtp.reply_to_next_rcpt(421, "4.3.2 System not accepting network messages");
    let mailer = smtp.mailer("[10, 20, 40]");
    let (email, _) = upcoming(Locale::En, "Li Wei");
    mailer
        .send(&email)
        .await
        .expect("delivered on the third try");
    assert_eq!(smtp.rcpt_calls(), 3);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "delivered exactly once");
    let msg = parse(&messages[0].data);
    assert_eq!(
        msg.header("Message-ID").as_deref(),
        Some("<repayd.3f9a0c1d2b4e.i123.upcoming.7@example.com>")
    );
    let text = msg.part("text/plain");
    assert!(
        text.contains("Your account ending 3000 is short by ¥120.50."),
        "{text}"
    );
    assert!(text.contains("Please top up by 18:00 on Friday, 30 January 2026"));
}

#[tokio::test]
async fn smtp_gives_up_on_temporary_failures_after_its_tries() {
    let smtp = SmtpListener::start();
    for _ in 0..3 {
        smtp.reply_to_next_rcpt(452, "4.2.2 Mailbox full");
    }
    let mailer = smtp.mailer("[10, 10]");
    let (email, _) = upcoming(Locale::En, "Li Wei");
    let err = mailer.send(&email).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(&err, MailError::Transient(t) if t.contains("4.2.2 Mailbox full")),
        "{err}"
    );
    assert_eq!(smtp.rcpt_calls(), 3, "one try and one per delay");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn smtp_permanent_refusal_is_not_retried_and_keeps_the_server_text() {
    let smtp = SmtpListener::start();
    smtp.reply_to_next_rcpt(
        550,
        "5.1.1 <li.wei@example.com>: Recipient address rejected",
    );
    let mailer = smtp.mailer("[10, 10, 10]");
    let (email, _) = upcoming(Locale::En, "Li Wei");
    let err = mailer.send(&email).await.unwrap_err();
    match &err {
        MailError::Permanent(text) => {
            assert!(text.contains("550"), "{text}");
            assert!(text.contains("Recipient address rejected"), "{text}");
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(smtp.rcpt_calls(), 1);
    assert!(smtp.messages().is_empty());

    // The listener is fine for the next message.
    mailer.send(&email).await.expect("next one goes through");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn smtp_unreachable_relay_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let smtp = SmtpListener {
        port,
        log: Arc::default(),
    };
    let mailer = smtp.mailer("[10, 10]");
    let (email, _) = upcoming(Locale::En, "Li Wei");
    let err = mailer.send(&email).await.unwrap_err();
    assert!(
        matches!(&err, MailError::Transient(t) if t.contains(&format!("127.0.0.1:{port}"))),
        "{err}"
    );
}

#[tokio::test]
async fn smtp_refuses_a_bad_address_before_connecting() {
    let smtp = SmtpListener::start();
    let mailer = smtp.mailer("[10]");
    let (mut email, _) = upcoming(Locale::En, "Li Wei");
    email.to = "li.wei at example.com".into();
    let err = mailer.send(&email).await.unwrap_err();
    assert!(matches!(err, MailError::Invalid(_)), "{err}");
    assert!(
        !err.to_string().contains("li.wei"),
        "addresses are masked: {err}"
    );
    assert_eq!(smtp.rcpt_calls(), 0);
}

#[tokio::test]
async fn smtp_sends_concurrently_through_the_pool() {
    let smtp = SmtpListener::start();
    let mailer = smtp.mailer("[10]");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mailer = mailer.clone();
        let (mut email, _) = upcoming(Locale::En, "Li Wei");
        email.message_id = message_id("3f9a0c1d2b4e", i, "upcoming", 7, "example.com");
        tasks.push(tokio::spawn(async move { mailer.send(&email).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("delivered");
    }
    let mut ids: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| parse(&m.data).header("Message-ID").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
}

// ---------------------------------------------------------------------------------------
// Outbox.

#[tokio::test]
async fn outbox_writes_a_readable_eml_with_both_parts() {
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("var/outbox");
    let settings: MailSettings = toml::from_str(&format!(
        "from = \"Example Finance <repayments@example.com>\"\noutbox_dir = {:?}",
        outbox_dir.display().to_string()
    ))
    .unwrap();
    assert!(settings.check().is_empty());
    let mailer = build_mailer(&settings).expect("outbox builds");
    let (email, _) = upcoming(Locale::ZhCn, "李伟");
    mailer.send(&email).await.unwrap();
    mailer.send(&email).await.unwrap();

    let files: Vec<_> = std::fs::read_dir(&outbox_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "a repeat overwrites: {files:?}");
    assert_eq!(
        files[0].file_name().unwrap().to_str().unwrap(),
        "repayd.3f9a0c1d2b4e.i123.upcoming.7@example.com.eml"
    );
    let msg = parse(&std::fs::read(&files[0]).unwrap());
    assert_eq!(
        msg.header("Subject").as_deref(),
        Some(email.subject.as_str())
    );
    assert_eq!(
        msg.header("To").as_deref(),
        Some("李伟 <li.wei@example.com>")
    );
    assert!(
        msg.part("text/plain")
            .contains("您尾号3000的账户目前还差¥120.50")
    );
    assert!(msg.part("text/html").contains("<html lang=\"zh-CN\">"));
}
