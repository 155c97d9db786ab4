//! Request validation for every gRPC service: what a request may contain, and the
//! `INVALID_ARGUMENT` that names the field (and index) of the first thing wrong with it. Keys,
//! prefixes, job and topic names, and durations are checked here and nowhere else.

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

    /// Checks a job or topic name: non-empty, at most `max_key_bytes`, and no '{' or '}' (the
    /// name becomes part of a Redis hash tag).
    pub fn check_name(&self, field: &str, name: &str) -> Result<(), Status> {
        self.check_key(field, name, false)?;
        if name.contains(['{', '}']) {
            return Err(Status::invalid_argument(format!(
                "{field}: must not contain '{{' or '}}'"
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

/// Checks a duration field in milliseconds: 1..=`max`, or 0 when `zero_ok`.
pub fn check_ms(field: &str, value: u64, max: u64, zero_ok: bool) -> Result<(), Status> {
    if value == 0 && !zero_ok {
        return Err(Status::invalid_argument(format!(
            "{field}: must be greater than 0"
        )));
    }
    if value > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {value} ms is more than the maximum ({max} ms)"
        )));
    }
    Ok(())
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
