//! What a request body holds before it is decoded: its gRPC messages (a 5-byte prefix, a
//! compression flag and a big-endian length, then the message) and, within each message, its
//! top-level length-delimited fields — the entries of a batch, each of which becomes a struct
//! and its allocations when decoded, whatever its size on the wire.
//!
//! The request budget counts a message at its announced size as soon as its prefix arrives,
//! and each of its top-level fields as it arrives: so a batch of one-byte keys, which decodes
//! to twenty times its size, is counted at what it will take. The walk reads each byte at most
//! once, keeps a few words of state between the chunks HTTP/2 delivers, and never fails:
//! bytes that are not a valid message are left for tonic's decoder to refuse.

/// What the walk found in the bytes given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A message whose prefix is complete: its size, prefix included.
    Message(usize),
    /// A top-level length-delimited field of the current message (a string, bytes, or an
    /// embedded message: one entry of a batch).
    Field,
}

/// The gRPC message prefix: a compression flag and a big-endian u32 length.
pub const PREFIX_BYTES: usize = 5;

/// Where the walk is within the current message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Within {
    /// Reading a field's tag.
    #[default]
    Tag,
    /// Reading the length of a length-delimited field.
    Length,
    /// Skipping a varint field's value.
    Varint,
    /// Skipping this many bytes (a field's value, or the rest of a message that is not valid).
    Skip(u64),
}

/// The walk's state between chunks.
#[derive(Debug, Default)]
pub struct Framing {
    prefix: [u8; PREFIX_BYTES],
    prefix_read: usize,
    /// Bytes of the current message not walked yet; 0 between messages.
    message_left: u64,
    within: Within,
    varint: u64,
    varint_shift: u32,
}

impl Framing {
    /// Walks the next `data` of the body, calling `found` for each message begun and each
    /// top-level field; stops at the first error `found` returns.
    pub fn walk<E>(
        &mut self,
        mut data: &[u8],
        mut found: impl FnMut(Found) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            if self.message_left == 0 {
                let take = data.len().min(PREFIX_BYTES - self.prefix_read);
                self.prefix[self.prefix_read..self.prefix_read + take]
                    .copy_from_slice(&data[..take]);
                self.prefix_read += take;
                data = &data[take..];
                if self.prefix_read == PREFIX_BYTES {
                    self.prefix_read = 0;
                    let [_, a, b, c, d] = self.prefix;
                    let length = u32::from_be_bytes([a, b, c, d]);
                    self.message_left = u64::from(length);
                    self.within = Within::Tag;
                    self.varint = 0;
                    self.varint_shift = 0;
                    found(Found::Message(
                        (length as usize).saturating_add(PREFIX_BYTES),
                    ))?;
                }
                continue;
            }
            let in_message = usize::try_from(self.message_left).unwrap_or(usize::MAX);
            let available = data.len().min(in_message);
            if let Within::Skip(left) = self.within {
                let skip = available.min(usize::try_from(left).unwrap_or(usize::MAX));
                self.within = match left - skip as u64 {
                    0 => Within::Tag,
                    left => Within::Skip(left),
                };
                self.advance(&mut data, skip);
                continue;
            }
            let byte = data[0];
            self.advance(&mut data, 1);
            if self.varint_shift >= 64 {
                // Longer than any varint: not a valid message; tonic's decoder refuses it.
                self.within = Within::Skip(u64::MAX);
                continue;
            }
            self.varint |= u64::from(byte & 0x7f) << self.varint_shift;
            self.varint_shift += 7;
            if byte & 0x80 != 0 {
                continue;
            }
            let value = std::mem::take(&mut self.varint);
            self.varint_shift = 0;
            self.within = match self.within {
                Within::Tag => match value & 0x7 {
                    0 => Within::Varint,
                    1 => Within::Skip(8),
                    2 => Within::Length,
                    5 => Within::Skip(4),
                    // Groups and wire types that do not exist: tonic's decoder refuses them.
                    _ => Within::Skip(u64::MAX),
                },
                Within::Length => {
                    found(Found::Field)?;
                    match value {
                        0 => Within::Tag,
                        length => Within::Skip(length),
                    }
                }
                Within::Varint | Within::Skip(_) => Within::Tag,
            };
        }
        Ok(())
    }

    /// Whether the walk is within a message whose prefix it has read (and so counted).
    pub fn within_message(&self) -> bool {
        self.message_left > 0
    }

    /// Moves `n` bytes on, within the current message.
    fn advance(&mut self, data: &mut &[u8], n: usize) {
        *data = &data[n..];
        self.message_left -= n as u64;
        if self.message_left == 0 {
            self.within = Within::Tag;
            self.varint = 0;
            self.varint_shift = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use coherence_testkit::fuzz;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use coherence_proto::v1 as pb;

    /// Every message and field found in `body` walked in chunks of `chunk` bytes.
    fn walk_in_chunks(body: &[u8], chunk: usize) -> Vec<Found> {
        let mut framing = Framing::default();
        let mut found = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            let _ = framing.walk::<Infallible>(piece, |f| {
                found.push(f);
                Ok(())
            });
        }
        found
    }

    /// `message` as a gRPC body: prefix, then the message.
    fn framed(message: &impl Message) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        body.extend(encoded);
        body
    }

    fn check_request(keys: &[String], with_versions: bool) -> pb::CheckRequest {
        pb::CheckRequest {
            entries: keys
                .iter()
                .map(|key| pb::KeyVersion {
                    key: key.clone(),
                    version: with_versions.then(|| pb::Version {
                        token: "1094ee851d359a3e.2.c79a922bb950a2aa".into(),
                        epoch: "e".into(),
                        as_of_sequence: 7,
                    }),
                })
                .collect(),
            consistency: 1,
        }
    }

    #[test]
    fn a_batch_is_found_as_its_message_and_one_field_per_entry_in_any_chunking() {
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let check = framed(&check_request(&keys, true));
        let get = framed(&pb::GetRequest {
            keys: keys.clone(),
            consistency: 1,
        });
        let mut body = check.clone();
        body.extend(&get);
        let mut expected = vec![Found::Message(check.len())];
        expected.extend(std::iter::repeat_n(Found::Field, 300));
        expected.push(Found::Message(get.len()));
        expected.extend(std::iter::repeat_n(Found::Field, 300));
        for chunk in [1, 2, 3, 5, 7, 64, 1000, body.len()] {
            assert_eq!(
                walk_in_chunks(&body, chunk),
                expected,
                "in chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_message_is_found_at_its_announced_size_before_its_bytes() {
        assert_eq!(
            walk_in_chunks(&[0, 0xff, 0xff, 0xff, 0xff], 5),
            [Found::Message(u32::MAX as usize + PREFIX_BYTES)]
        );
        assert_eq!(
            walk_in_chunks(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 3),
            [Found::Message(5), Found::Message(5)]
        );
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Any bytes in any chunking: no panic, the same findings whatever the chunking, and
        /// never more fields than the bytes could hold (a field takes at least two bytes).
        #[test]
        fn fuzz_request_framing_any_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..64,
        ) {
            let whole = walk_in_chunks(&body, body.len());
            prop_assert_eq!(&walk_in_chunks(&body, chunk), &whole);
            let fields = whole.iter().filter(|f| **f == Found::Field).count();
            prop_assert!(fields <= body.len() / 2);
        }

        /// Valid Check requests of any keys, framed: one message at its exact size and one
        /// field per entry, in any chunking.
        #[test]
        fn fuzz_request_framing_valid_batches(
            keys in proptest::collection::vec("\\PC{0,40}", 0..40),
            with_versions in any::<bool>(),
            chunk in 1usize..64,
        ) {
            let body = framed(&check_request(&keys, with_versions));
            let mut expected = vec![Found::Message(body.len())];
            expected.extend(std::iter::repeat_n(Found::Field, keys.len()));
            prop_assert_eq!(walk_in_chunks(&body, chunk), expected);
        }
    }
}
