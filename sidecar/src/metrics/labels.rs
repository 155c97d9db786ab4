//! The label-set types of the sidecar's metric families (one place, shared by every group of
//! metrics).

/// Label sets of one, two and three labels.
pub type Labels1 = [(&'static str, &'static str); 1];
pub type Labels2 = [(&'static str, &'static str); 2];
pub type Labels3 = [(&'static str, &'static str); 3];
