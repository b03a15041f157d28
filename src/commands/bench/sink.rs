//! A loopback SMTP sink for the benchmarks: accepts every message (ESMTP, PIPELINING,
//! several messages per connection), counts them and throws them away. Only as much of
//! RFC 5321 as a relay's client needs; it listens on 127.0.0.1 only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running sink; it stops when dropped.
pub struct SmtpSink {
    pub port: u16,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl SmtpSink {
    /// Listens on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (count, token) = (Arc::clone(&accepted), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    conn = listener.accept() => {
                        if let Ok((stream, _)) = conn {
                            let count = Arc::clone(&count);
                            let token = token.clone();
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = token.cancelled() => {}
                                    _ = session(stream, count) => {}
                                }
                            });
                        }
                    }
                }
            }
        });
        Ok(Self {
            port,
            accepted,
            stop,
        })
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn session(stream: TcpStream, accepted: Arc<AtomicU64>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.localhost ESMTP\r\n").await?;
    let mut line = Vec::with_capacity(1024);
    let mut in_data = false;
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                accepted.fetch_add(1, Ordering::Relaxed);
                write.write_all(b"250 2.0.0 queued\r\n").await?;
            }
            continue;
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match &verb[..] {
            b"EHLO" => b"250-sink.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            b"HELO" => b"250 sink.localhost\r\n",
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => b"250 2.0.0 ok\r\n",
            b"DATA" => {
                in_data = true;
                b"354 end with <CRLF>.<CRLF>\r\n"
            }
            b"QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_messages_over_one_connection() {
        let sink = SmtpSink::start().await.unwrap();
        let stream = TcpStream::connect(("127.0.0.1", sink.port)).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        assert!(lines.next_line().await.unwrap().unwrap().starts_with("220"));
        write.write_all(b"EHLO t\r\n").await.unwrap();
        for _ in 0..4 {
            lines.next_line().await.unwrap();
        }
        for _ in 0..2 {
            write
                .write_all(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
                .await
                .unwrap();
            for _ in 0..3 {
                lines.next_line().await.unwrap();
            }
            write
                .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\n")
                .await
                .unwrap();
            assert!(lines.next_line().await.unwrap().unwrap().starts_with("250"));
        }
        write.write_all(b"QUIT\r\n").await.unwrap();
        assert!(lines.next_line().await.unwrap().unwrap().starts_with("221"));
        assert_eq!(sink.accepted(), 2);
    }
}
