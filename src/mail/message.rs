//! Turns an [`OutgoingEmail`] into a MIME message (multipart/alternative, text then
//! HTML, UTF-8), the same bytes for SMTP and the outbox. Every header value goes through
//! lettre's encoder, which RFC 2047-encodes CR and LF: no name or subject can add a header.

use super::{MailError, OutgoingEmail};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

pub(crate) fn build(from: &Mailbox, email: &OutgoingEmail) -> Result<Message, MailError> {
    let address = email.to.trim().parse().map_err(|e| {
        MailError::Invalid(format!(
            "recipient {} is not an email address: {e}",
            crate::mask::email(&email.to)
        ))
    })?;
    let name = one_line(&email.to_name);
    let to = Mailbox::new((!name.is_empty()).then_some(name), address);
    check_message_id(&email.message_id)?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(one_line(&email.subject))
        .message_id(Some(format!("<{}>", email.message_id)))
        .date_now()
        // RFC 3834: tells auto-responders (vacation replies) not to answer.
        .raw_header(header("Auto-Submitted", "auto-generated"))
        .raw_header(header("Content-Language", &email.locale))
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| MailError::Invalid(format!("cannot build the message: {e}")))
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), one_line(value))
}

/// Control characters (CR, LF, tab...) become spaces and runs of spaces collapse: a header
/// value is one line, whatever the data held.
pub(crate) fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `local@domain` in printable ASCII without brackets, spaces or a second `@`.
fn check_message_id(id: &str) -> Result<(), MailError> {
    let ok = id.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && id.chars().all(|c| {
                c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '\\' | '(' | ')' | ',')
            })
    });
    if ok {
        Ok(())
    } else {
        Err(MailError::Invalid(format!(
            "message id {id:?} must look like local@domain, without <>, spaces or quotes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: "li.wei@example.com".into(),
            to_name: "李伟".into(),
            subject: "还款提醒：¥1,066.19".into(),
            text: "金额 ¥1,066.19".into(),
            html: "<p>金额 ¥1,066.19</p>".into(),
            message_id: "repayd.i1.upcoming.7@example.com".into(),
            locale: "zh-CN".into(),
        }
    }

    fn from() -> Mailbox {
        "Repayments <repayments@example.com>".parse().unwrap()
    }

    fn headers_of(raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw).to_string();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    #[test]
    fn builds_multipart_alternative_with_the_given_message_id() {
        let raw = build(&from(), &email()).unwrap().formatted();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.is_ascii(), "everything is encoded for 7-bit transport");
        let headers = headers_of(&raw);
        assert!(headers.contains("Message-ID: <repayd.i1.upcoming.7@example.com>"));
        assert!(headers.contains("Content-Type: multipart/alternative"));
        assert!(headers.contains("Content-Language: zh-CN"));
        assert!(headers.contains("Auto-Submitted: auto-generated"));
        assert!(headers.contains("Date: "));
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(text.contains("Content-Type: text/html; charset=utf-8"));
    }

    #[test]
    fn crlf_in_name_or_subject_never_makes_a_header() {
        let mut e = email();
        e.to_name = "Eve\r\nBcc: victim@evil.example".into();
        e.subject = "Hello\r\nBcc: x@evil.example\nX-Injected: yes".into();
        let raw = build(&from(), &e).unwrap().formatted();
        let headers = headers_of(&raw);
        for line in headers.split("\r\n") {
            assert!(!line.to_ascii_lowercase().starts_with("bcc:"), "{line}");
            assert!(!line.starts_with("X-Injected"), "{line}");
        }
        assert!(headers.contains("Subject: Hello Bcc: x@evil.example X-Injected: yes"));
        let msg = build(&from(), &e).unwrap();
        assert_eq!(msg.envelope().to().len(), 1);
    }

    #[test]
    fn bad_addresses_and_ids_are_invalid_not_sent() {
        let mut e = email();
        e.to = "not an address".into();
        assert!(matches!(build(&from(), &e), Err(MailError::Invalid(_))));
        let mut e = email();
        e.to = "a@example.com\r\nRCPT TO:<b@example.com>".into();
        assert!(matches!(build(&from(), &e), Err(MailError::Invalid(_))));
        for id in ["<a@b>", "no-at-sign", "a b@c", "a@b\r\nX: y", "@b", "a@"] {
            let mut e = email();
            e.message_id = id.into();
            assert!(
                matches!(build(&from(), &e), Err(MailError::Invalid(_))),
                "{id}"
            );
        }
    }

    #[test]
    fn one_line_collapses_control_characters() {
        assert_eq!(one_line(" a\r\n\tb  c\u{0}d "), "a b c d");
        assert_eq!(one_line("\r\n"), "");
    }
}
