//! Verification: the requests and the model's replies to them, precomputed, and the counters
//! every worker adds its verified, wrong and failed replies to.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests and their expected replies, precomputed.
pub(super) struct Payloads {
    pub(super) requests: Vec<Vec<u8>>,
    pub(super) replies: Vec<Vec<u8>>,
}

impl Payloads {
    /// 64 distinct requests of exactly `size` bytes (`\n` excluded) with a trailing `\n`, and
    /// their replies from the model.
    pub(super) fn new(size: usize, unicode: bool) -> Self {
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        for i in 0..64usize {
            let text = if unicode {
                upcase_model::unicode_text(i as u64 + 1, size)
            } else {
                let words = ["lorem ", "ipsum ", "dolor ", "sit ", "amet "];
                (0..size).map(|k| words[(i + k) % 5]).collect()
            };
            let mut line = String::with_capacity(size + 4);
            for c in text.chars() {
                if line.len() + c.len_utf8() > size {
                    break;
                }
                line.push(c);
            }
            // A `\r` before the `\n` is data for upcase but stripped by some baselines (tokio's
            // LinesCodec); no request ends with one, so every server gets comparable work.
            if line.ends_with('\r') {
                line.pop();
            }
            while line.len() < size {
                line.push('x');
            }
            line.push('\n');
            replies.push(upcase_model::upper(line.as_bytes()));
            requests.push(line.into_bytes());
        }
        Self { requests, replies }
    }
}

/// Counters shared by the worker threads, and the first failure in words.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) reply_bytes: AtomicU64,
    pub(super) mismatches: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) lost: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) failure: Mutex<Option<String>>,
}

impl Counters {
    /// Counts an error and keeps the first one's reason.
    pub(super) fn fail(&self, why: String) {
        bump(&self.errors, 1);
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(why);
    }

    /// Counts a wrong reply and keeps its description as the first failure if none came yet.
    pub(super) fn wrong(&self, why: String) {
        bump(&self.mismatches, 1);
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(why);
    }

    /// Counts a verified reply of `bytes` bytes.
    pub(super) fn verified(&self, bytes: usize) {
        bump(&self.requests, 1);
        bump(&self.reply_bytes, bytes as u64);
    }
}

/// Adds `n` to a counter.
pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A wrong reply to `who` (`connection 3`), with the start of what was expected and what came.
pub(super) fn mismatch(who: &str, want: &[u8], got: &[u8]) -> String {
    let show = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(48)]).into_owned();
        format!(
            "\"{}\"{}",
            s.escape_debug(),
            if b.len() > 48 { "…" } else { "" }
        )
    };
    format!(
        "{who}: wrong reply: expected {}, got {}",
        show(want),
        show(got)
    )
}

#[cfg(test)]
mod tests {
    use super::Payloads;

    #[test]
    fn payloads_have_the_exact_size_and_the_model_s_replies() {
        for unicode in [false, true] {
            for size in [1, 5, 16, 64, 1024] {
                let p = Payloads::new(size, unicode);
                for (req, rep) in p.requests.iter().zip(&p.replies) {
                    assert_eq!(req.len(), size + 1, "size {size} unicode {unicode}");
                    let text = std::str::from_utf8(&req[..size]).unwrap();
                    assert!(!text.contains('\n') && !text.ends_with('\r'));
                    assert_eq!(&rep[..], format!("{}\n", text.to_uppercase()).as_bytes());
                }
            }
        }
        assert!(
            Payloads::new(64, true)
                .requests
                .iter()
                .any(|r| !r.is_ascii())
        );
    }
}
