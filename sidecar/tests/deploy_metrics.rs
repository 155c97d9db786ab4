//! The shipped Grafana dashboard and Prometheus alert rules query only metrics a live sidecar
//! exports — a renamed metric cannot leave a silently empty panel or an alert that never fires.

mod ops;

use std::collections::BTreeSet;

use coherence_testkit::RedisServer;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/grafana/coherence-dashboard.json"
);
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/base/prometheusrule.yaml"
);

/// Every `coherence_…` identifier in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("coherence_") {
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            into.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
}

/// Metric names in the dashboard's queries (panel targets and template variables).
fn dashboard_metrics() -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, names: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                            metric_names(q, names)
                        }
                        _ => walk(v, names),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    walk(&json, &mut names);
    names
}

/// Metric names in the alert rules' `expr:` fields (single-line or block scalars).
fn rule_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(RULES).expect("read the PrometheusRule");
    let mut names = BTreeSet::new();
    let mut in_expr_block = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(block_indent) = in_expr_block {
            if indent > block_indent || line.trim().is_empty() {
                metric_names(line, &mut names);
                continue;
            }
            in_expr_block = None;
        }
        if let Some(expr) = line.trim_start().strip_prefix("expr:") {
            if expr.trim() == "|" || expr.trim() == ">" {
                in_expr_block = Some(indent);
            } else {
                metric_names(expr, &mut names);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let dashboard = dashboard_metrics();
    let rules = rule_metrics();
    assert!(
        dashboard.len() >= 15,
        "the dashboard should cover the sidecar: {dashboard:?}"
    );
    assert!(
        rules.len() >= 4,
        "the rules should cover the sidecar: {rules:?}"
    );

    let redis = RedisServer::start();
    let (a, b) = ops::sidecars_after_traffic(&redis.url()).await;
    let exported = ops::exported_names(&a.scrape().await);
    let missing_dashboard: Vec<_> = dashboard.difference(&exported).collect();
    let missing_rules: Vec<_> = rules.difference(&exported).collect();
    assert!(
        missing_dashboard.is_empty() && missing_rules.is_empty(),
        "not exported by the sidecar — dashboard: {missing_dashboard:?}, alert rules: {missing_rules:?}\nexported: {exported:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn metric_names_are_found_in_promql() {
    let mut names = BTreeSet::new();
    metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(coherence_x_bucket{a=\"coherence_label_value\"}[5m]))) / my_coherence_y",
        &mut names,
    );
    // A label value is found too (harmless: it must then exist, so keep label values plain).
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec![
            "coherence_label_value".to_string(),
            "coherence_x_bucket".to_string()
        ]
    );
}
