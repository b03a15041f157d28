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
}
