//! Input limits: what a request may contain, and the `INVALID_ARGUMENT` that names the field
//! and index of the first thing wrong with it.

use tonic::Status;

/// The limits from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_batch_keys: usize,
}

impl Limits {
    /// Checks a list of keys (or prefixes, with `allow_empty`) named `field`.
    pub fn check_keys<'a>(
        &self,
        field: &str,
        keys: impl ExactSizeIterator<Item = &'a str>,
        allow_empty: bool,
    ) -> Result<(), Status> {
        self.check_count(field, keys.len())?;
        for (i, key) in keys.enumerate() {
            self.check_key(&format!("{field}[{i}]"), key, allow_empty)?;
        }
        Ok(())
    }

    pub fn check_count(&self, field: &str, count: usize) -> Result<(), Status> {
        if count > self.max_batch_keys {
            return Err(Status::invalid_argument(format!(
                "{field}: {count} items, more than max_batch_keys ({})",
                self.max_batch_keys
            )));
        }
        Ok(())
    }

    pub fn check_key(&self, field: &str, key: &str, allow_empty: bool) -> Result<(), Status> {
        if key.is_empty() && !allow_empty {
            return Err(Status::invalid_argument(format!("{field}: key is empty")));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "{field}: key is {} bytes, longer than max_key_bytes ({})",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// The largest request message these limits allow, for tonic's decoder.
    pub fn max_message_bytes(&self) -> usize {
        let per_key = self.max_key_bytes + 256;
        self.max_batch_keys
            .saturating_mul(per_key)
            .saturating_add(64 * 1024)
            .max(4 * 1024 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_field_and_index() {
        let limits = Limits {
            max_key_bytes: 4,
            max_batch_keys: 2,
        };
        let err = limits
            .check_keys("keys", ["a", ""].into_iter(), false)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("keys[1]"), "{}", err.message());
        let err = limits
            .check_keys("keys", ["abcde"].into_iter(), false)
            .unwrap_err();
        assert!(err.message().contains("max_key_bytes"), "{}", err.message());
        let err = limits
            .check_keys("keys", ["a", "b", "c"].into_iter(), false)
            .unwrap_err();
        assert!(
            err.message().contains("max_batch_keys"),
            "{}",
            err.message()
        );
        assert!(limits
            .check_keys("prefixes", [""].into_iter(), true)
            .is_ok());
    }
}
