//! The two text formats `/metrics` speaks: OpenMetrics 1.0 and the Prometheus text format 0.0.4.
//!
//! prometheus-client encodes OpenMetrics only. Prometheus asks for OpenMetrics, but `curl`,
//! `promtool check metrics` and older scrapers expect the classic 0.0.4 text format, in which a
//! counter's `TYPE` line names the `_total` sample, there is no `info` type and no `# EOF`.
//! Like client_golang's handler, the admin listener negotiates on `Accept` and serves 0.0.4 by
//! default, translated here from the OpenMetrics encoding (the two differ only in those
//! descriptor lines for the metric types this crate registers).

/// Content type of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Translates an OpenMetrics exposition into the Prometheus text format 0.0.4.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    // Types by family name, so the HELP line (which precedes TYPE) can be renamed too.
    let mut types = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name, kind);
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let translated = if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // OpenMetrics escapes `"` in HELP; the 0.0.4 format does not.
            let help = help.replace("\\\"", "\"");
            format!(
                "# HELP {} {}",
                text_name(name, types.get(name).copied()),
                help
            )
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let text_kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                "info" | "stateset" => "gauge",
                _ => "untyped",
            };
            format!("# TYPE {} {}", text_name(name, Some(kind)), text_kind)
        } else {
            line.to_string()
        };
        out.push_str(&translated);
        out.push('\n');
    }
    out
}

/// The 0.0.4 name of an OpenMetrics family: counters and infos carry their sample suffix.
fn text_name(name: &str, kind: Option<&str>) -> String {
    match kind {
        Some("counter") => format!("{name}_total"),
        Some("info") => format!("{name}_info"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_counter_and_info_families_and_drops_eof() {
        let om = "# HELP x_build Build \\\"info\\\".\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n\
                  # HELP x_hits Hits.\n# TYPE x_hits counter\nx_hits_total 3\n\
                  # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP x_build_info Build \"info\".\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n\
             # HELP x_hits_total Hits.\n# TYPE x_hits_total counter\nx_hits_total 3\n\
             # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn negotiates_on_accept() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
