//! Reading a Prometheus text exposition (what `/metrics` answers): tests look up one sample
//! by its exact series, the way an alert or a dashboard query would.

/// The value of the one sample whose name and labels appear in `exposition` exactly as given
/// (`series` like `coherence_bumps_total` or `coherence_x{a="b"}`).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
