//! Pictures of replica state as the slides draw it: one column per server,
//! its version vector on top and its log below, in the slides' notation.
//!
//! * [`columns`]: the text form, for a terminal (`bayou sim --columns`).
//! * [`svg`]: a figure of a whole scenario, one row per `show`, tentative
//!   writes in grey as Bayou's calendar showed tentative meetings
//!   (`bayou sim FILE --svg OUT.svg`; `docs/bayou/slides.svg`).

use crate::scenario::{Command, Line};
use crate::world::{ServerSnapshot, Snapshot};

/// The caption of each `show` in a scenario: its line's comment, else its
/// line number.
pub fn captions(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| matches!(l.command, Command::Show))
        .map(|l| match &l.comment {
            Some(c) => c.clone(),
            None => format!("line {}", l.number),
        })
        .collect()
}

fn title(s: &ServerSnapshot) -> String {
    if s.primary {
        format!("{} (primary)", s.server)
    } else {
        s.server.to_string()
    }
}

/// The lines of one server's column: title, versions, rule, log, then the
/// database (full view).
fn column_lines(s: &ServerSnapshot) -> Vec<String> {
    let mut lines = vec![title(s), s.vv_text(), String::new()];
    lines.extend(s.log_lines());
    if s.log.is_empty() {
        lines.push("(empty log)".into());
    }
    lines.extend(db_lines(s));
    lines
}

fn db_lines(s: &ServerSnapshot) -> Vec<String> {
    if s.db.is_empty() {
        return vec!["db: (empty)".into()];
    }
    let mut lines = vec!["db:".to_string()];
    lines.extend(s.db.iter().map(|(k, v)| format!("  {k}={v}")));
    lines
}

/// Every server side by side, as on the slides.
pub fn columns(snapshot: &Snapshot) -> String {
    let cols: Vec<Vec<String>> = snapshot.servers.iter().map(column_lines).collect();
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| c.iter().map(|l| l.chars().count()).max().unwrap_or(0))
        .collect();
    let height = cols.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = String::new();
    for row in 0..height {
        let mut line = String::new();
        for (col, width) in cols.iter().zip(&widths) {
            let cell = if row == 2 {
                "-".repeat(*width)
            } else {
                col.get(row).cloned().unwrap_or_default()
            };
            let pad = width - cell.chars().count();
            line.push_str(&cell);
            line.push_str(&" ".repeat(pad + 4));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG figure: one row per step (caption, then the servers' columns).
pub fn svg(steps: &[(String, Snapshot)]) -> String {
    const CHAR_W: f64 = 7.8;
    const LINE_H: f64 = 17.0;
    const PAD: f64 = 12.0;
    let servers = steps.first().map(|(_, s)| s.servers.len()).unwrap_or(0);
    // Column widths fit the widest entry of each server over all steps.
    let mut widths = vec![0usize; servers];
    for (_, snap) in steps {
        for (i, s) in snap.servers.iter().enumerate() {
            for l in column_lines(s) {
                widths[i] = widths[i].max(l.chars().count());
            }
        }
    }
    let col_w: Vec<f64> = widths
        .iter()
        .map(|&w| w as f64 * CHAR_W + 2.0 * PAD)
        .collect();
    let caption_w = steps
        .iter()
        .map(|(c, _)| c.chars().count() as f64 * 8.4 + 2.0 * PAD)
        .fold(0.0, f64::max);
    let total_w = (col_w.iter().sum::<f64>() + PAD * (servers as f64 + 1.0)).max(caption_w);
    let mut body = String::new();
    let mut y = PAD;
    for (caption, snap) in steps {
        y += LINE_H;
        body.push_str(&format!(
            "<text x=\"{PAD}\" y=\"{y:.1}\" class=\"caption\">{}</text>\n",
            escape(caption)
        ));
        y += 6.0;
        let rows = snap
            .servers
            .iter()
            .map(|s| 3 + s.log.len().max(1) + db_lines(s).len())
            .max()
            .unwrap_or(3);
        let box_h = rows as f64 * LINE_H + PAD;
        let mut x = PAD;
        for (i, s) in snap.servers.iter().enumerate() {
            body.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{box_h:.1}\" rx=\"6\" class=\"box\"/>\n",
                col_w[i]
            ));
            let tx = x + PAD;
            let mut ty = y + LINE_H;
            body.push_str(&format!(
                "<text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"title\">{}</text>\n",
                escape(&title(s))
            ));
            ty += LINE_H;
            body.push_str(&format!(
                "<text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"vv\">{}</text>\n",
                escape(&s.vv_text())
            ));
            body.push_str(&format!(
                "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" class=\"rule\"/>\n",
                ty + 6.0,
                x + col_w[i] - PAD,
                ty + 6.0
            ));
            ty += LINE_H + 4.0;
            if s.log.is_empty() {
                body.push_str(&format!(
                    "<text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"empty\">(empty log)</text>\n"
                ));
            }
            for ((csn, _), line) in s.log.iter().zip(s.log_lines()) {
                let class = if csn.is_some() {
                    "committed"
                } else {
                    "tentative"
                };
                body.push_str(&format!(
                    "<text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"{class}\">{}</text>\n",
                    escape(&line)
                ));
                ty += LINE_H;
            }
            if s.log.is_empty() {
                ty += LINE_H;
            }
            for line in db_lines(s) {
                body.push_str(&format!(
                    "<text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"db\">{}</text>\n",
                    escape(&line)
                ));
                ty += LINE_H;
            }
            x += col_w[i] + PAD;
        }
        y += box_h + PAD;
    }
    let total_h = y + PAD;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0}" height="{total_h:.0}" viewBox="0 0 {total_w:.0} {total_h:.0}">
<style>
text {{ font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }}
.caption {{ font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 14px; font-weight: bold; fill: #222; }}
.box {{ fill: #f7f7f9; stroke: #9aa; }}
.title {{ font-weight: bold; fill: #113; }}
.vv {{ fill: #1a5fb4; }}
.rule {{ stroke: #bbb; }}
.committed {{ fill: #000; }}
.tentative {{ fill: #888; font-style: italic; }}
.empty {{ fill: #aaa; }}
.db {{ fill: #26734d; }}
</style>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"##
    )
}
