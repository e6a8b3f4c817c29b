//! Markdown and HTML renderings of a [`Report`]. Numbers print with 4 decimals (6 for
//! deltas); missing values print as `–`.

use std::fmt::Write;

use super::Report;

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.4}"))
}

fn delta(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:+.6}"))
}

fn mark(m: &super::MetricRow) -> &'static str {
    match (m.improved, m.delta) {
        (Some(true), _) => "better",
        (Some(false), _) => "worse",
        (None, Some(_)) => "same",
        (None, None) => "",
    }
}

/// Markdown: verdict, metrics table, failed reasons, per-task table.
pub(super) fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let verdict = if r.verdict.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(s, "# Validation report: {verdict}\n");
    let _ = writeln!(
        s,
        "Candidate: `{}`  \nBaseline: `{}`\n",
        md_cell(&r.candidate),
        md_cell(&r.baseline)
    );
    let _ = writeln!(s, "## Metrics\n");
    let _ = writeln!(s, "| metric | candidate | baseline | delta | |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    for m in &r.metrics {
        let _ = writeln!(
            s,
            "| {}{} | {} | {} | {} | {} |",
            md_cell(&m.metric),
            if m.higher_is_better {
                ""
            } else {
                " (lower is better)"
            },
            num(m.candidate),
            num(m.baseline),
            delta(m.delta),
            mark(m)
        );
    }
    let _ = writeln!(s, "\n## Gate\n");
    let _ = writeln!(s, "| check | result |");
    let _ = writeln!(s, "|---|---|");
    for c in &r.verdict.checks {
        let _ = writeln!(
            s,
            "| {} | {} |",
            md_cell(&c.condition),
            if c.passed { "pass" } else { "**fail**" }
        );
    }
    let reasons: Vec<&str> = r.verdict.reasons().collect();
    if !reasons.is_empty() {
        let _ = writeln!(s, "\nReasons:\n");
        for why in reasons {
            let _ = writeln!(s, "- {why}");
        }
    }
    if let Some(tm) = &r.task_metric {
        let _ = writeln!(s, "\n## Tasks ({})\n", md_cell(tm));
        let _ = writeln!(s, "| task | candidate | baseline |");
        let _ = writeln!(s, "|---|---:|---:|");
        for t in &r.tasks {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                md_cell(&t.id),
                num(t.candidate),
                num(t.baseline)
            );
        }
    }
    s
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#176f2c;font-weight:bold}\
.fail{color:#b3261e;font-weight:bold}.better{color:#176f2c}.worse{color:#b3261e}";

/// Per-task scores as paired bars (candidate blue, baseline grey) in an inline SVG.
fn svg_plot(r: &Report) -> String {
    let n = r.tasks.len();
    if n == 0 {
        return String::new();
    }
    let values = r
        .tasks
        .iter()
        .flat_map(|t| [t.candidate, t.baseline])
        .flatten()
        .filter(|v| v.is_finite());
    let top = values.fold(1.0f64, f64::max);
    let (left, bottom, h) = (48.0, 24.0, 200.0);
    let slot = (720.0 / n as f64).clamp(6.0, 40.0);
    let w = left + slot * n as f64 + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{:.0}\" role=\"img\" \
         aria-label=\"per-task scores\">",
        h + bottom + 10.0
    );
    for k in 0..=4 {
        let v = top * f64::from(k) / 4.0;
        let y = 10.0 + h - h * f64::from(k) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{w:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v:.2}</text>",
            left - 4.0,
            y + 3.0
        );
    }
    let bar = |s: &mut String, x: f64, v: Option<f64>, color: &str, label: &str| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            let bh = (v.max(0.0) / top) * h;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\">\
                 <title>{} {v:.4}</title></rect>",
                10.0 + h - bh,
                (slot / 2.0 - 1.0).max(1.0),
                esc(label)
            );
        }
    };
    for (i, t) in r.tasks.iter().enumerate() {
        let x = left + slot * i as f64;
        bar(
            &mut s,
            x,
            t.candidate,
            "#1f6fd1",
            &format!("{} candidate", t.id),
        );
        bar(
            &mut s,
            x + slot / 2.0,
            t.baseline,
            "#9aa0a6",
            &format!("{} baseline", t.id),
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{w:.1}\" y2=\"{:.1}\" stroke=\"#444\"/>\
         <text x=\"{left}\" y=\"{:.1}\" font-size=\"11\">tasks 1–{n} (blue: candidate, grey: baseline)</text></svg>",
        10.0 + h,
        10.0 + h,
        h + bottom + 6.0
    );
    s
}

/// One HTML page, no external asset: the same tables as the Markdown plus the plot.
pub(super) fn html(r: &Report) -> String {
    let mut s = String::new();
    let (verdict, class) = if r.verdict.passed {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    };
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Validation report: {verdict}</title><style>{CSS}</style></head><body>\n\
         <h1>Validation report: <span class=\"{class}\">{verdict}</span></h1>\n\
         <p>Candidate: <code>{}</code><br>Baseline: <code>{}</code></p>\n",
        esc(&r.candidate),
        esc(&r.baseline)
    );
    s.push_str(
        "<h2>Metrics</h2>\n<table><tr><th>metric</th><th>candidate</th><th>baseline</th>\
         <th>delta</th><th></th></tr>\n",
    );
    for m in &r.metrics {
        let k = mark(m);
        let _ = writeln!(
            s,
            "<tr><td>{}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"{k}\">{k}</td></tr>",
            esc(&m.metric),
            if m.higher_is_better {
                ""
            } else {
                " (lower is better)"
            },
            num(m.candidate),
            num(m.baseline),
            delta(m.delta)
        );
    }
    s.push_str(
        "</table>\n<h2>Gate</h2>\n<table><tr><th>check</th><th>result</th><th>reason</th></tr>\n",
    );
    for c in &r.verdict.checks {
        let (t, k) = if c.passed {
            ("pass", "pass")
        } else {
            ("fail", "fail")
        };
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"{k}\">{t}</td><td>{}</td></tr>",
            esc(&c.condition),
            esc(c.reason.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</table>\n");
    if let Some(tm) = &r.task_metric {
        let _ = writeln!(s, "<h2>Tasks ({})</h2>", esc(tm));
        s.push_str(&svg_plot(r));
        s.push_str("\n<table><tr><th>task</th><th>candidate</th><th>baseline</th></tr>\n");
        for t in &r.tasks {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&t.id),
                num(t.candidate),
                num(t.baseline)
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}
