//! Where one RESP value ends in a byte stream, so that the fault proxy can hold, delay or drop
//! whole replies and pushes without ever cutting one in half.
//!
//! The redis crate decodes values but reads ahead of the value it returns, so it cannot say
//! where a value ends in a stream; this module only finds the boundaries (RESP2 and RESP3), and
//! the complete value is then decoded by `redis::parse_redis_value`.

use redis::{PushKind, Value};

/// The bytes at hand are not RESP (the proxy then stops looking for boundaries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotResp;

/// A length or count no Redis ever sends to a test: taken as garbage rather than waited for.
const MAX_LEN: i64 = 512 * 1024 * 1024;

/// The length of the complete RESP value at the start of `buf`, `Ok(None)` when more bytes are
/// needed to tell.
pub fn value_len(buf: &[u8]) -> Result<Option<usize>, NotResp> {
    let mut pos = 0;
    // Values still to read: a header announces its elements, which are read in turn.
    let mut pending: i64 = 1;
    while pending > 0 {
        let Some(kind) = buf.get(pos).copied() else {
            return Ok(None);
        };
        let Some(line_len) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[pos + 1..pos + line_len];
        pos += line_len + 2;
        pending -= 1;
        match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {}
            // Blob string, blob error, verbatim string: the length, then the bytes and CRLF.
            b'$' | b'!' | b'=' => {
                let n = number(line)?;
                if n >= 0 {
                    let end = pos + n as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(NotResp);
                    }
                    pos = end;
                }
            }
            // Array, set, push: that many values follow (-1: a RESP2 null array).
            b'*' | b'~' | b'>' => pending += number(line)?.max(0),
            b'%' => pending += 2 * number(line)?.max(0),
            // An attribute map annotates the value that follows it.
            b'|' => pending += 2 * number(line)?.max(0) + 1,
            _ => return Err(NotResp),
        }
    }
    Ok(Some(pos))
}

fn number(line: &[u8]) -> Result<i64, NotResp> {
    let n: i64 = std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(NotResp)?;
    if n > MAX_LEN {
        return Err(NotResp);
    }
    Ok(n)
}

/// The first element of a command (an array of strings), upper-cased: `SUBSCRIBE`, `GET`, …
pub fn command_name(value: &[u8]) -> Option<String> {
    match redis::parse_redis_value(value).ok()? {
        Value::Array(items) => match items.into_iter().next()? {
            Value::BulkString(name) => Some(String::from_utf8_lossy(&name).to_ascii_uppercase()),
            _ => None,
        },
        _ => None,
    }
}

/// The payload of a pub/sub message (a RESP3 `message`/`smessage` push, or the RESP2 array),
/// `None` for every other value.
pub fn message_payload(value: &[u8]) -> Option<Vec<u8>> {
    let data = match redis::parse_redis_value(value).ok()? {
        Value::Push {
            kind: PushKind::Message | PushKind::SMessage,
            data,
        } => data,
        Value::Array(items) => {
            let mut items = items.into_iter();
            match items.next()? {
                Value::BulkString(kind) if kind == b"message" || kind == b"smessage" => {
                    items.collect()
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    match data.into_iter().nth(1)? {
        Value::BulkString(payload) => Some(payload),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_every_kind_of_value() {
        let values: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":42\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",3.5\r\n",
            b"(12345678901234567890\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"!3\r\nerr\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"%1\r\n+a\r\n*1\r\n:1\r\n",
            b"~2\r\n:1\r\n:2\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\ni|a|b\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        ];
        for value in values {
            let mut stream = value.to_vec();
            stream.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(
                value_len(&stream),
                Ok(Some(value.len())),
                "{}",
                String::from_utf8_lossy(value)
            );
            for cut in 0..value.len() {
                assert_eq!(value_len(&value[..cut]), Ok(None), "{cut}");
            }
        }
    }

    #[test]
    fn garbage_is_not_resp() {
        assert_eq!(value_len(b"PING\r\n"), Err(NotResp));
        assert_eq!(value_len(b"$x\r\n"), Err(NotResp));
        assert_eq!(value_len(b"$2\r\nabcd\r\n"), Err(NotResp));
        assert_eq!(value_len(b"*99999999999\r\n"), Err(NotResp));
    }

    #[test]
    fn names_commands_and_reads_message_payloads() {
        assert_eq!(
            command_name(b"*2\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n").as_deref(),
            Some("SUBSCRIBE")
        );
        assert_eq!(command_name(b"+OK\r\n"), None);
        let push = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\ni|a|b\r\n";
        assert_eq!(message_payload(push).as_deref(), Some(&b"i|a|b"[..]));
        let resp2 = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nf|n\r\n";
        assert_eq!(message_payload(resp2).as_deref(), Some(&b"f|n"[..]));
        let confirmation = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
        assert_eq!(message_payload(confirmation), None);
    }
}
