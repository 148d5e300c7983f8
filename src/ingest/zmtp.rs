//! A ZMTP 3 byte stream read frame by frame, so lengths can be checked before a byte of the frame
//! reaches a ZeroMQ socket. The `zeromq` crate reserves a frame's declared length as soon as it
//! reads the header; a forged 2^40-byte length would take the process down. The guard pipes every
//! untrusted connection through [`pipe_checked`] first.
//!
//! Wire layout: a 64-byte greeting (byte 0 = 0xFF, byte 9 = 0x7F, byte 10 = major version), then
//! frames: one flags byte (bit 0 MORE, bit 1 LONG, bit 2 COMMAND, the rest zero), a length (1 byte,
//! or 8 bytes big-endian when LONG) and the body.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size limits on what a peer may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: u64,
    pub max_message_bytes: u64,
}

pub const GREETING_LEN: usize = 64;
/// Parts in one multipart message: the formats here use at most a handful; a peer sending
/// millions of empty parts makes the ZeroMQ socket keep every one.
pub const MAX_PARTS: u64 = 256;
/// A peer must finish its greeting within this.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Inside a frame or a multipart message, a peer that sends nothing for this long is cut off
/// (slowloris); between messages a peer may be idle as long as it likes (a detector between series).
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Command frames (READY, SUBSCRIBE, …) are small; a large one is not a real peer.
pub const MAX_COMMAND_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum ZmtpError {
    #[error("not a ZMTP 3 peer: greeting byte {index} is {value:#04x}")]
    Greeting { index: usize, value: u8 },
    #[error("frame declares {len} bytes, over the {max}-byte limit")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("multipart message reaches {len} bytes, over the {max}-byte limit")]
    MessageTooLarge { len: u64, max: u64 },
    #[error("command frame declares {len} bytes, over the {max}-byte limit")]
    CommandTooLarge { len: u64, max: u64 },
    #[error("multipart message has more than {max} parts")]
    TooManyParts { max: u64 },
    #[error("message of {len} bytes so far does not fit the memory budget's share for messages in flight")]
    OverBudget { len: u64 },
    #[error("peer stalled: nothing for {0:?} during the {1}")]
    Stalled(std::time::Duration, &'static str),
    #[error("reserved frame flag bits set ({0:#04x})")]
    Flags(u8),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub more: bool,
    pub command: bool,
    pub len: u64,
}

impl FrameHeader {
    /// Bytes of the header on the wire (flags and length).
    pub fn wire_len(&self) -> u64 {
        if self.len > 255 { 9 } else { 2 }
    }

    pub fn encode(&self) -> Vec<u8> {
        let long = self.len > 255;
        let flags = u8::from(self.more) | (u8::from(long) << 1) | (u8::from(self.command) << 2);
        let mut out = vec![flags];
        if long {
            out.extend(self.len.to_be_bytes());
        } else {
            out.push(self.len as u8);
        }
        out
    }
}

/// Forwards the greeting as its bytes arrive, checking the signature and version.
pub async fn pipe_greeting<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W) -> Result<(), ZmtpError> {
    let mut buf = [0u8; GREETING_LEN];
    let mut have = 0;
    while have < GREETING_LEN {
        let n = r.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed during the greeting").into()
            );
        }
        for (i, &value) in buf.iter().enumerate().skip(have).take(n) {
            let bad = match i {
                0 => value != 0xff,
                9 => value != 0x7f,
                10 => value < 3,
                _ => false,
            };
            if bad {
                return Err(ZmtpError::Greeting { index: i, value });
            }
        }
        w.write_all(&buf[have..have + n]).await?;
        w.flush().await?;
        have += n;
    }
    Ok(())
}

/// Reads a frame header, checking flags and the declared length against `limits` (commands
/// against [`MAX_COMMAND_BYTES`]). `message_so_far`: bytes of the current multipart message,
/// headers included — so empty parts count too (each costs the receiving socket a part).
/// `Ok(None)` at a clean end of stream.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    message_so_far: u64,
) -> Result<Option<FrameHeader>, ZmtpError> {
    let flags = match r.read_u8().await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if flags & 0xf8 != 0 {
        return Err(ZmtpError::Flags(flags));
    }
    let len = if flags & 0x02 != 0 { r.read_u64().await? } else { u64::from(r.read_u8().await?) };
    let h = FrameHeader { more: flags & 0x01 != 0, command: flags & 0x04 != 0, len };
    if h.command {
        if len > MAX_COMMAND_BYTES {
            return Err(ZmtpError::CommandTooLarge { len, max: MAX_COMMAND_BYTES });
        }
    } else {
        if len > limits.max_frame_bytes {
            return Err(ZmtpError::FrameTooLarge { len, max: limits.max_frame_bytes });
        }
        let total = message_so_far.saturating_add(len).saturating_add(h.wire_len());
        if total > limits.max_message_bytes {
            return Err(ZmtpError::MessageTooLarge { len: total, max: limits.max_message_bytes });
        }
    }
    Ok(Some(h))
}

/// Copies a ZMTP 3 stream from `r` to `w`, refusing any frame or message over `limits` before its
/// body is forwarded. Bodies stream through a small buffer. Returns the bytes forwarded at a clean
/// end of stream.
pub async fn pipe_checked<R, W>(r: &mut R, w: &mut W, limits: Limits) -> Result<u64, ZmtpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pipe_within(r, w, limits, None).await
}

/// What the receiving socket keeps per part besides its bytes (the part's handle in the message).
pub const PART_OVERHEAD_BYTES: u64 = 64;

/// [`pipe_checked`], with every message's bytes reserved from `budget` ([`Kind::Ingest`]) before
/// they are forwarded: a message that does not fit is refused (the peer disconnected, counted). The
/// socket keeps a message until the daemon takes it, so its reservation is held until the peer
/// starts its next message or leaves.
///
/// [`Kind::Ingest`]: crate::budget::Kind::Ingest
pub async fn pipe_within<R, W>(
    r: &mut R,
    w: &mut W,
    limits: Limits,
    budget: Option<&std::sync::Arc<crate::budget::Budget>>,
) -> Result<u64, ZmtpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut held: Vec<crate::budget::Reservation> = Vec::new();
    tokio::time::timeout(HANDSHAKE_TIMEOUT, pipe_greeting(r, w))
        .await
        .map_err(|_| ZmtpError::Stalled(HANDSHAKE_TIMEOUT, "greeting"))??;
    let mut forwarded = GREETING_LEN as u64;
    let (mut message, mut parts) = (0u64, 0u64);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let next = read_header(r, &limits, message);
        let h = if message > 0 || parts > 0 {
            // Inside a multipart message: the next part must come.
            tokio::time::timeout(STALL_TIMEOUT, next).await.map_err(|_| ZmtpError::Stalled(STALL_TIMEOUT, "message"))??
        } else {
            next.await?
        };
        let Some(h) = h else { break };
        if !h.command {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(ZmtpError::TooManyParts { max: MAX_PARTS });
            }
            if let Some(b) = budget {
                if parts == 1 {
                    // A new message: the socket has handed the previous one on (or holds it, and
                    // then holds back this one until the daemon takes it).
                    held.clear();
                }
                let cost = h.len + h.wire_len() + PART_OVERHEAD_BYTES;
                match b.try_reserve(cost, crate::budget::Kind::Ingest) {
                    Some(r) => held.push(r),
                    None => return Err(ZmtpError::OverBudget { len: message + cost }),
                }
            }
        }
        let header = h.encode();
        w.write_all(&header).await?;
        let mut left = h.len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = tokio::time::timeout(STALL_TIMEOUT, r.read(&mut buf[..want]))
                .await
                .map_err(|_| ZmtpError::Stalled(STALL_TIMEOUT, "frame"))??;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed inside a frame").into());
            }
            w.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        w.flush().await?;
        forwarded += header.len() as u64 + h.len;
        if !h.command {
            (message, parts) = if h.more { (message + h.len + h.wire_len(), parts) } else { (0, 0) };
        }
    }
    Ok(forwarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Vec<u8> {
        let mut g = vec![0u8; GREETING_LEN];
        g[0] = 0xff;
        g[9] = 0x7f;
        g[10] = 3;
        g[12..16].copy_from_slice(b"NULL");
        g
    }

    const LIMITS: Limits = Limits { max_frame_bytes: 1000, max_message_bytes: 1500 };

    async fn pipe(input: Vec<u8>) -> (Result<u64, ZmtpError>, Vec<u8>) {
        let mut out = Vec::new();
        let r = pipe_checked(&mut input.as_slice(), &mut out, LIMITS).await;
        (r, out)
    }

    #[tokio::test]
    async fn forwards_valid_frames_unchanged() {
        let mut s = greeting();
        s.extend(FrameHeader { more: false, command: true, len: 5 }.encode());
        s.extend(b"READY");
        s.extend(FrameHeader { more: true, command: false, len: 3 }.encode());
        s.extend(b"abc");
        s.extend(FrameHeader { more: false, command: false, len: 900 }.encode());
        s.extend(vec![7u8; 900]);
        let (r, out) = pipe(s.clone()).await;
        assert_eq!(r.expect("ok"), s.len() as u64);
        assert_eq!(out, s);
    }

    #[tokio::test]
    async fn refuses_forged_lengths_before_forwarding_them() {
        let mut s = greeting();
        // A LONG frame claiming 2 GiB, followed by nothing.
        s.extend(FrameHeader { more: false, command: false, len: 2 << 30 }.encode());
        let (r, out) = pipe(s).await;
        assert!(matches!(r, Err(ZmtpError::FrameTooLarge { len, .. }) if len == 2 << 30));
        assert_eq!(out.len(), GREETING_LEN, "the oversized header never reaches the socket");
        // Parts that are each allowed but together too large.
        let mut s = greeting();
        for _ in 0..2 {
            s.extend(FrameHeader { more: true, command: false, len: 800 }.encode());
            s.extend(vec![1u8; 800]);
        }
        assert!(matches!(pipe(s).await.0, Err(ZmtpError::MessageTooLarge { .. })));
        let mut s = greeting();
        s.push(0x80);
        assert!(matches!(pipe(s).await.0, Err(ZmtpError::Flags(0x80))));
        let mut bad = greeting();
        bad[9] = 0;
        assert!(matches!(pipe(bad).await.0, Err(ZmtpError::Greeting { index: 9, .. })));
    }
}
