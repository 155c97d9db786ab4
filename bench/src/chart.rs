//! The chart: section 1 as grouped bars on log scales (throughput and p99 latency by
//! concurrency), written as plain SVG.
//!
//! Hand-written rather than drawn with a plotting crate so that the benchmark builds with cargo
//! alone on a bare machine (no system font libraries) and the output stays small and diffable.

use std::fmt::Write as _;

use crate::report::{fmt_dur, fmt_rate, Report};

/// The check targets drawn, in legend order: (row id, legend label, colour).
const SERIES: &[(&str, &str, &str)] = &[
    (
        "a_client_mirror",
        "(a) client mirror hit, in process",
        "#2ca02c",
    ),
    ("b_check1", "(b) sidecar Check, 1 key", "#1f77b4"),
    (
        "b_check100",
        "(b) sidecar Check, batch 100 (keys/s)",
        "#9ecae1",
    ),
    ("c_redis_get", "(c) Redis GET", "#d62728"),
    ("d_postgres", "(d) PostgreSQL SELECT", "#9467bd"),
    ("e_floor1", "(e) bare tonic floor, 1 key", "#7f7f7f"),
];

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 470.0;

pub fn svg(report: &Report) -> String {
    let mut levels: Vec<usize> = report
        .rows
        .iter()
        .filter(|r| r.section == "1 check")
        .map(|r| r.concurrency)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let value = |id: &str, c: usize, f: &dyn Fn(&crate::report::Row) -> Option<f64>| {
        report.find(id, c).and_then(f)
    };
    let throughput: Vec<Vec<Option<f64>>> = SERIES
        .iter()
        .map(|(id, _, _)| {
            levels
                .iter()
                .map(|&c| value(id, c, &|r| Some(r.units_per_sec)))
                .collect()
        })
        .collect();
    let p99: Vec<Vec<Option<f64>>> = SERIES
        .iter()
        .map(|(id, _, _)| {
            levels
                .iter()
                .map(|&c| value(id, c, &|r| r.p99.map(|d| d.as_secs_f64())))
                .collect()
        })
        .collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="16">Check cost by concurrency (log scales; same key set, same run)</text>"#,
        WIDTH / 2.0
    );
    let panel_w = (WIDTH - 140.0) / 2.0;
    panel(
        &mut out,
        Frame {
            x: 70.0,
            y: 50.0,
            w: panel_w - 30.0,
            h: 300.0,
        },
        "checks/s (keys/s for the batch) — higher is better",
        &levels,
        &throughput,
        &|v| fmt_rate(v),
    );
    panel(
        &mut out,
        Frame {
            x: 70.0 + panel_w + 40.0,
            y: 50.0,
            w: panel_w - 30.0,
            h: 300.0,
        },
        "p99 latency per call — lower is better",
        &levels,
        &p99,
        &|v| fmt_dur(Some(std::time::Duration::from_secs_f64(v))),
    );
    for (i, (_, label, colour)) in SERIES.iter().enumerate() {
        let x = 70.0 + (i % 3) as f64 * 330.0;
        let y = 400.0 + (i / 3) as f64 * 22.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="14" height="14" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            y - 11.0,
            x + 20.0,
            y,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[derive(Clone, Copy)]
struct Frame {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// One panel: groups (concurrency levels) of bars (series) on a log10 axis.
fn panel(
    out: &mut String,
    f: Frame,
    title: &str,
    levels: &[usize],
    series: &[Vec<Option<f64>>],
    fmt: &dyn Fn(f64) -> String,
) {
    let values: Vec<f64> = series
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| *v > 0.0)
        .collect();
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
        f.x + f.w / 2.0,
        f.y - 8.0,
        escape(title)
    );
    if values.is_empty() || levels.is_empty() {
        return;
    }
    // Room below the smallest bar (a third of it), so that it stays visible.
    let lo = (values.iter().copied().fold(f64::INFINITY, f64::min) / 3.0)
        .log10()
        .floor();
    let hi = values
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y_of = |v: f64| f.y + f.h - (v.log10() - lo) / (hi - lo) * f.h;
    // Axis and decade grid lines.
    let mut decade = lo;
    while decade <= hi {
        let y = y_of(10f64.powf(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"##,
            f.x,
            f.x + f.w,
            f.x - 4.0,
            y + 3.0,
            escape(&fmt(10f64.powf(decade)))
        );
        decade += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="black"/><line x1="{0}" y1="{2}" x2="{3}" y2="{2}" stroke="black"/>"#,
        f.x,
        f.y,
        f.y + f.h,
        f.x + f.w
    );
    let group_w = f.w / levels.len() as f64;
    let bar_w = (group_w - 20.0) / series.len() as f64;
    for (g, level) in levels.iter().enumerate() {
        let gx = f.x + g as f64 * group_w + 10.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">concurrency {level}</text>"#,
            gx + (group_w - 20.0) / 2.0,
            f.y + f.h + 16.0
        );
        for (s, values) in series.iter().enumerate() {
            let Some(v) = values.get(g).copied().flatten().filter(|v| *v > 0.0) else {
                continue;
            };
            let top = y_of(v);
            let colour = SERIES.get(s).map_or("#000", |(_, _, c)| c);
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}</title></rect>"#,
                gx + s as f64 * bar_w,
                bar_w - 2.0,
                f.y + f.h - top,
                escape(&fmt(v))
            );
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
