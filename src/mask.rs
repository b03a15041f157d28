//! Masking of personal data for logs: emails and account numbers never reach a log line
//! whole.

/// `alice.smith@example.com` -> `a***@example.com`.
pub fn email(addr: &str) -> String {
    match addr.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// `DE89370400440532013000` -> `****3000`: only the last four characters stay.
pub fn account(reference: &str) -> String {
    let chars: Vec<char> = reference.chars().collect();
    if chars.len() <= 4 {
        return "****".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("****{tail}")
}

/// Masks every email address found in free text (e.g. an SMTP server's reply such as
/// `550 <alice@example.com>: mailbox unavailable`) before it reaches a log line.
pub fn emails_in(text: &str) -> String {
    let is_part = |c: char| c.is_alphanumeric() || "._%+-@".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let looks_like_address = word
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if looks_like_address {
            out.push_str(&email(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_part(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_what_an_operator_needs() {
        assert_eq!(email("alice.smith@example.com"), "a***@example.com");
        assert_eq!(email("not-an-email"), "***");
        assert_eq!(account("DE89370400440532013000"), "****3000");
        assert_eq!(account("123"), "****");
        assert_eq!(account("账户12345"), "****2345");
    }

    #[test]
    fn addresses_inside_server_replies_are_masked() {
        assert_eq!(
            emails_in("550 5.1.1 <alice.smith@example.com>: Recipient address rejected"),
            "550 5.1.1 <a***@example.com>: Recipient address rejected"
        );
        assert_eq!(
            emails_in("no address @ here, a@b"),
            "no address @ here, a@b"
        );
    }
}
