//! Scrubs every secret this process knows out of text before it leaves: errors, log
//! lines, the state DB. A remote that echoes the request (the client secret, a signed
//! assertion, the bearer token) in its error body cannot make us print or store it.
//!
//! Secrets are registered where they are resolved (config secrets) or issued (access
//! tokens, client assertions); [`scrub`] replaces each with [`MASK`], in the forms a
//! remote is likely to echo it: as sent, form-urlencoded and JSON-escaped.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::sync::{LazyLock, RwLock};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Shorter values are not registered: masking every "abc" would mangle messages, and
/// no credential the remotes issue or accept is this short.
const MIN_LEN: usize = 8;

/// Issued values kept (access tokens, assertions). A daemon renews a token an hour, so
/// this is weeks of them; an older one expired long ago.
const MAX_ISSUED: usize = 1024;

#[derive(Default)]
struct Registry {
    /// Config secrets, for the life of the process.
    lasting: BTreeSet<String>,
    /// Issued values, oldest first.
    issued: VecDeque<String>,
    /// Every form of every value, longest first (a value that contains another is
    /// masked whole).
    patterns: Vec<String>,
}

impl Registry {
    fn rebuild(&mut self) {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for v in self.lasting.iter().chain(self.issued.iter()) {
            all.extend(forms(v));
        }
        let mut patterns: Vec<String> = all.into_iter().collect();
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.patterns = patterns;
    }
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

/// The forms a remote may echo `value` in.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    let urlencoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    out.push(urlencoded);
    if let Ok(json) = serde_json::to_string(value) {
        out.push(json.trim_matches('"').to_string());
    }
    out.retain(|f| f.len() >= MIN_LEN);
    out
}

/// Register a secret for the life of the process (a resolved config secret).
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let Ok(mut reg) = REGISTRY.write() else {
        return;
    };
    if reg.lasting.insert(value.to_string()) {
        reg.rebuild();
    }
}

/// Register a value issued to or by this process: an access token, a client assertion.
pub fn register_issued(value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let Ok(mut reg) = REGISTRY.write() else {
        return;
    };
    if reg.issued.iter().any(|v| v == value) {
        return;
    }
    reg.issued.push_back(value.to_string());
    while reg.issued.len() > MAX_ISSUED {
        reg.issued.pop_front();
    }
    reg.rebuild();
}

/// Register a signed JWT (a client assertion): the whole token and its signature, the
/// part that cannot be rebuilt from what is public.
pub fn register_jwt(jwt: &str) {
    register_issued(jwt);
    if let Some(signature) = jwt.rsplit('.').next() {
        register_issued(signature);
    }
}

/// Register a PEM private key: the whole text and each line of its body, so that an
/// echo of part of the key is masked too.
pub fn register_pem(pem: &str) {
    register(pem);
    for line in pem.lines().map(str::trim) {
        if !line.starts_with("-----") && line.len() >= 16 {
            register(line);
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn scrub(text: &str) -> String {
    let Ok(reg) = REGISTRY.read() else {
        // A panic while registering poisoned the lock: say nothing rather than leak.
        return MASK.to_string();
    };
    let mut out = std::borrow::Cow::Borrowed(text);
    for p in &reg.patterns {
        if out.contains(p.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(p.as_str(), MASK));
        }
    }
    out.into_owned()
}

/// A log writer that scrubs each event before it reaches `M`'s writer:
/// `.with_writer(redact::Scrubbing(std::io::stderr))`.
pub struct Scrubbing<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Scrubbing<M>
{
    type Writer = ScrubWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubWriter {
            inner: self.0.make_writer(),
            buf: Vec::new(),
        }
    }
}

/// One event's writer: holds the event's bytes and writes them scrubbed when flushed
/// or dropped (the formatter makes one writer per event), so a secret split across two
/// writes is still seen whole.
pub struct ScrubWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> ScrubWriter<W> {
    fn emit(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.buf);
        let text = scrub(&String::from_utf8_lossy(&bytes));
        self.inner.write_all(text.as_bytes())
    }
}

impl<W: Write> Write for ScrubWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit();
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_registered_secret_is_masked() {
        register("unit-Secret+/=&\"value");
        let text = "raw unit-Secret+/=&\"value, form unit-Secret%2B%2F%3D%26%22value, \
                    json unit-Secret+/=&\\\"value";
        assert_eq!(scrub(text), "raw ***, form ***, json ***");
    }

    #[test]
    fn short_values_are_not_registered_and_text_without_secrets_is_unchanged() {
        register("abc");
        assert_eq!(scrub("abc abcdef"), "abc abcdef");
    }

    #[test]
    fn a_longer_secret_containing_a_shorter_one_is_masked_whole() {
        register_issued("unit-token-1");
        register_issued("unit-token-12");
        assert_eq!(scrub("a unit-token-12 b unit-token-1"), "a *** b ***");
    }

    #[test]
    fn a_jwt_signature_and_pem_lines_are_masked_alone() {
        register_jwt("aGVhZGVy.cGF5bG9hZA.unit-signature-xyz");
        assert_eq!(scrub("sig unit-signature-xyz"), "sig ***");
        register_pem("-----BEGIN PRIVATE KEY-----\nUNITLINEONEabcdefghij\nUNITLINETWOabcdefghij\n-----END PRIVATE KEY-----\n");
        assert_eq!(scrub("part UNITLINETWOabcdefghij"), "part ***");
    }

    #[test]
    fn the_log_writer_masks_a_secret_split_across_writes() {
        register("unit-split-secret");
        let mut out = Vec::new();
        {
            let mut w = ScrubWriter {
                inner: &mut out,
                buf: Vec::new(),
            };
            w.write_all(b"token unit-spl").unwrap();
            w.write_all(b"it-secret end\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "token *** end\n");
    }
}
