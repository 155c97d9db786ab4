//! Reading a Prometheus text exposition (what `/metrics` answers): tests look up one sample
//! by its exact series, the way an alert or a dashboard query would, or sum a metric over
//! every label set.

/// The value of the one sample whose name and labels appear in `exposition` exactly as given
/// (`series` like `coherence_bumps_total` or `coherence_x{a="b"}`).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The sum of a metric's samples (every label set) in a Prometheus text exposition; 0 when
/// absent. `name` is the sample name, e.g. `coherence_bumps_total` or `…_seconds_count`.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
