//! The results: one row per measurement, ratios against the targets, and their output
//! as a console table, CSV and a Markdown table (for BENCHMARKS.md).

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::Samples;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Section of the issue ("1 check", "2 bump", ...).
    pub section: &'static str,
    /// Stable identifier, for ratios and the CSV ("b_check1", "d_postgres", ...).
    pub id: String,
    /// What was measured, for people.
    pub label: String,
    pub concurrency: usize,
    pub ops_per_sec: f64,
    /// Work units per second (keys/s; equal to ops/s for single-key calls).
    pub units_per_sec: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub p999: Option<Duration>,
    pub ops: u64,
    pub errors: u64,
    pub note: String,
}

impl Row {
    pub fn from_samples(
        section: &'static str,
        id: &str,
        label: &str,
        concurrency: usize,
        s: &Samples,
    ) -> Row {
        Row {
            section,
            id: id.to_string(),
            label: label.to_string(),
            concurrency,
            ops_per_sec: s.ops_per_sec(),
            units_per_sec: s.units_per_sec(),
            p50: s.quantile(0.50),
            p99: s.quantile(0.99),
            p999: s.quantile(0.999),
            ops: s.ops,
            errors: s.errors,
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// A ratio the issue sets a goal for, as measured in this run.
#[derive(Debug, Clone)]
pub struct Ratio {
    pub what: String,
    pub measured: Option<f64>,
    /// Unit the measured value is shown in ("×", " B", " ms").
    pub unit: String,
    /// The goal, e.g. "≥ 1000×".
    pub goal: String,
    pub met: Option<bool>,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    /// Free-text findings (memory per key, RSS, ...), printed under the table.
    pub facts: Vec<String>,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        println!("{}", console_line(&row));
        self.rows.push(row);
    }

    pub fn fact(&mut self, fact: impl Into<String>) {
        let fact = fact.into();
        println!("  * {fact}");
        self.facts.push(fact);
    }

    pub fn find(&self, id: &str, concurrency: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.id == id && r.concurrency == concurrency)
    }

    /// Records `numerator / denominator` against a goal; `at_least` says which side is good.
    pub fn ratio(
        &mut self,
        what: impl Into<String>,
        value: Option<f64>,
        goal: f64,
        at_least: bool,
        unit: &str,
    ) {
        let sign = if at_least { "≥" } else { "≤" };
        let met = value.map(|v| if at_least { v >= goal } else { v <= goal });
        self.ratios.push(Ratio {
            what: what.into(),
            measured: value,
            unit: unit.to_string(),
            goal: format!("{sign} {}{unit}", trim_float(goal)),
            met,
        });
    }

    /// Records a ratio the issue asks to see but sets no goal for.
    pub fn info(&mut self, what: impl Into<String>, value: Option<f64>) {
        self.ratios.push(Ratio {
            what: what.into(),
            measured: value,
            unit: "×".into(),
            goal: String::new(),
            met: None,
        });
    }

    pub fn console_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<46} {:>4} {:>13} {:>13} {:>10} {:>10} {:>10} {:>7}",
            "section", "what", "conc", "calls/s", "keys/s", "p50", "p99", "p999", "errors"
        );
        for r in &self.rows {
            let _ = writeln!(out, "{}", console_line(r));
        }
        out.push_str(&self.ratio_lines());
        out
    }

    fn ratio_lines(&self) -> String {
        let mut out = String::new();
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "ratio: {:<70} {:>12}  goal {:<10} {}",
                r.what,
                r.measured.map_or("n/a".into(), |v| fmt_ratio(v, &r.unit)),
                r.goal,
                status(r, "MISSED")
            );
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from(
            "section,id,label,concurrency,calls_per_sec,keys_per_sec,p50_us,p99_us,p999_us,ops,errors,note\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.1},{:.1},{},{},{},{},{},{}",
                csv_field(r.section),
                csv_field(&r.id),
                csv_field(&r.label),
                r.concurrency,
                r.ops_per_sec,
                r.units_per_sec,
                micros(r.p50),
                micros(r.p99),
                micros(r.p999),
                r.ops,
                r.errors,
                csv_field(&r.note)
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| section | what | conc. | calls/s | keys/s | p50 | p99 | p999 | errors | note |\n|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.section,
                r.label,
                r.concurrency,
                fmt_rate(r.ops_per_sec),
                fmt_rate(r.units_per_sec),
                fmt_dur(r.p50),
                fmt_dur(r.p99),
                fmt_dur(r.p999),
                r.errors,
                r.note.replace('|', "/")
            );
        }
        if !self.ratios.is_empty() {
            out.push_str("\n| ratio | measured | goal | |\n|---|--:|---|---|\n");
            for r in &self.ratios {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    r.what,
                    r.measured.map_or("n/a".into(), |v| fmt_ratio(v, &r.unit)),
                    r.goal,
                    status(r, "**missed**")
                );
            }
        }
        if !self.facts.is_empty() {
            out.push('\n');
            for f in &self.facts {
                let _ = writeln!(out, "- {f}");
            }
        }
        out
    }
}

fn status(r: &Ratio, missed: &'static str) -> &'static str {
    match (r.met, r.goal.is_empty(), r.measured.is_some()) {
        (Some(true), _, _) => "met",
        (Some(false), _, _) => missed,
        (None, true, true) => "",
        (None, _, _) => "not measured",
    }
}

fn console_line(r: &Row) -> String {
    let mut label = r.label.clone();
    if label.chars().count() > 46 {
        label = label.chars().take(45).collect::<String>() + "…";
    }
    let mut line = format!(
        "{:<10} {:<46} {:>4} {:>13} {:>13} {:>10} {:>10} {:>10} {:>7}",
        r.section,
        label,
        r.concurrency,
        fmt_rate(r.ops_per_sec),
        fmt_rate(r.units_per_sec),
        fmt_dur(r.p50),
        fmt_dur(r.p99),
        fmt_dur(r.p999),
        r.errors
    );
    if !r.note.is_empty() {
        line.push_str("  ");
        line.push_str(&r.note);
    }
    line
}

fn micros(d: Option<Duration>) -> String {
    d.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64() * 1e6))
}

/// A latency for people: ns, µs or ms with three significant digits.
pub fn fmt_dur(d: Option<Duration>) -> String {
    let Some(d) = d else { return "-".into() };
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.3} µs", ns / 1e3).replace(".000", "")
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// A rate for people, with thousands separators.
pub fn fmt_rate(r: f64) -> String {
    if r <= 0.0 {
        return "-".into();
    }
    let whole = r.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_ratio(v: f64, unit: &str) -> String {
    if v >= 100.0 {
        format!("{}{unit}", fmt_rate(v))
    } else {
        format!("{v:.2}{unit}")
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 {
        fmt_rate(v)
    } else {
        format!("{v}")
    }
}

/// A CSV field, quoted when it needs to be (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn rates_and_durations_read_well() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_dur(Some(Duration::from_nanos(85))), "85 ns");
        assert_eq!(fmt_dur(Some(Duration::from_nanos(12_345))), "12.345 µs");
        assert_eq!(fmt_dur(Some(Duration::from_micros(2_500))), "2.50 ms");
    }
}
