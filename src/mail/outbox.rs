//! Mailers that keep messages on this machine: [`OutboxMailer`] writes one `.eml` file per
//! message (the embedded default), [`CaptureMailer`] keeps them in memory for
//! `repayd simulate` and engine tests.

use super::{MailError, Mailer, OutgoingEmail, message};
use lettre::message::Mailbox;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes each message to `<dir>/<message-id>.eml`. The same Message-ID always lands in
/// the same file, so a repeat after a crash overwrites instead of piling up.
#[derive(Debug)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
    temp_counter: AtomicU64,
}

impl OutboxMailer {
    /// Creates `dir` (and its parents) if missing.
    pub fn new(dir: &Path, from: Mailbox) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            from,
            temp_counter: AtomicU64::new(0),
        })
    }

    /// Where the message with this id is (or would be) written.
    pub fn path_for(&self, message_id: &str) -> PathBuf {
        self.dir.join(file_name(message_id))
    }
}

/// `repayd.i1.upcoming.7@example.com.eml`; anything outside `[A-Za-z0-9._@-]` becomes `_`
/// so an id can never climb out of the directory.
fn file_name(message_id: &str) -> String {
    let safe: String = message_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    format!("{safe}.eml")
}

#[async_trait::async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let bytes = message::build(&self.from, email)?.formatted();
        let target = self.path_for(&email.message_id);
        // A hidden temp name, unique per process and write: a reader of the directory
        // sees either no file or a whole one, never half a message.
        let temp = self.dir.join(format!(
            ".tmp-{}-{}.eml",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = tokio::task::spawn_blocking({
            let target = target.clone();
            move || write_atomically(&temp, &target, &bytes)
        })
        .await
        .map_err(|e| MailError::Transient(format!("outbox writer stopped: {e}")))?;
        written
            .map_err(|e| MailError::Transient(format!("cannot write {}: {e}", target.display())))?;
        tracing::info!(
            to = %crate::mask::email(&email.to),
            message_id = %email.message_id,
            "email written to outbox"
        );
        Ok(())
    }
}

fn write_atomically(temp: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let result = (|| {
        let mut file = std::fs::File::create(temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(temp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

/// Keeps every sent email in memory, in order. Messages are still built (and so checked)
/// as for SMTP: a bad address fails here as it would in production.
#[derive(Debug, Default)]
pub struct CaptureMailer {
    sent: Mutex<Vec<OutgoingEmail>>,
}

impl CaptureMailer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything sent so far.
    pub fn sent(&self) -> Vec<OutgoingEmail> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Everything sent so far, emptying the capture.
    pub fn take(&self) -> Vec<OutgoingEmail> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait::async_trait]
impl Mailer for CaptureMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let from: Mailbox = "repayd <repayd@localhost>".parse().expect("valid mailbox");
        message::build(&from, email)?;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(email.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(id: &str, subject: &str) -> OutgoingEmail {
        OutgoingEmail {
            to: "li.wei@example.com".into(),
            to_name: "Li Wei".into(),
            subject: subject.into(),
            text: "text".into(),
            html: "<p>html</p>".into(),
            message_id: id.into(),
            locale: "en".into(),
        }
    }

    #[test]
    fn file_names_stay_inside_the_directory() {
        assert_eq!(
            file_name("repayd.i1.upcoming.7@example.com"),
            "repayd.i1.upcoming.7@example.com.eml"
        );
        assert_eq!(file_name("../../etc/passwd@x"), "_.._etc_passwd@x.eml");
        assert_eq!(file_name("a/b\\c@d"), "a_b_c@d.eml");
    }

    #[tokio::test]
    async fn same_message_id_overwrites_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let from: Mailbox = "Repayments <r@example.com>".parse().unwrap();
        let outbox = OutboxMailer::new(&dir.path().join("outbox"), from).unwrap();
        outbox
            .send(&email("a.1@example.com", "first"))
            .await
            .unwrap();
        outbox
            .send(&email("a.1@example.com", "second"))
            .await
            .unwrap();
        outbox
            .send(&email("b.1@example.com", "other"))
            .await
            .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a.1@example.com.eml", "b.1@example.com.eml"]);
        let text = std::fs::read_to_string(outbox.path_for("a.1@example.com")).unwrap();
        assert!(text.contains("Subject: second"));
    }

    #[tokio::test]
    async fn capture_keeps_what_was_sent_and_rejects_what_smtp_would() {
        let capture = CaptureMailer::new();
        capture
            .send(&email("a.1@example.com", "one"))
            .await
            .unwrap();
        let mut bad = email("a.2@example.com", "two");
        bad.to = "nobody".into();
        assert!(matches!(
            capture.send(&bad).await,
            Err(MailError::Invalid(_))
        ));
        assert_eq!(capture.sent().len(), 1);
        assert_eq!(capture.take()[0].subject, "one");
        assert!(capture.sent().is_empty());
    }
}
