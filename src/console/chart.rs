//! The 30-day chart of the Today page as inline SVG, drawn on the server: one bar per day
//! for what fell due (light) with what was collected of it (dark) inside. No script, no
//! inline style (the page's Content-Security-Policy allows neither); presentation
//! attributes only.

use std::fmt::Write as _;

/// One day's bar, amounts in minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// The label under the bar (e.g. `11-28`); only every fifth is printed.
    pub label: String,
    pub due_minor: i64,
    pub collected_minor: i64,
    /// The tooltip (`<title>`): the day and both amounts, formatted.
    pub title: String,
}

const WIDTH: i64 = 600;
const HEIGHT: i64 = 160;
const BOTTOM: i64 = 20;

/// The SVG element for `bars` (oldest first), with `label` as its accessible name.
pub fn bars(label: &str, bars: &[Bar]) -> String {
    let mut out = String::new();
    let max = bars
        .iter()
        .map(|b| b.due_minor.max(b.collected_minor))
        .max()
        .unwrap_or(0);
    let n = bars.len().max(1) as i64;
    let slot = WIDTH / n;
    let bar_width = (slot * 7 / 10).max(1);
    let plot = HEIGHT - BOTTOM;
    let scale = |v: i64| -> i64 {
        if max <= 0 {
            0
        } else {
            // i128: minor units times pixels never overflows.
            ((i128::from(v) * i128::from(plot)) / i128::from(max)) as i64
        }
    };
    let _ = write!(
        out,
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape(label)
    );
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{plot}\" x2=\"{WIDTH}\" y2=\"{plot}\" stroke=\"#888\" stroke-width=\"1\"/>"
    );
    for (i, b) in bars.iter().enumerate() {
        let x = i as i64 * slot + (slot - bar_width) / 2;
        let due_h = scale(b.due_minor);
        let got_h = scale(b.collected_minor.min(b.due_minor.max(b.collected_minor)));
        let _ = write!(out, "<g><title>{}</title>", escape(&b.title));
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar_width}\" height=\"{due_h}\" fill=\"#b9d3ee\"/>",
            plot - due_h
        );
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar_width}\" height=\"{got_h}\" fill=\"#2a6eb8\"/>",
            plot - got_h
        );
        out.push_str("</g>");
        if i.is_multiple_of(5) || i + 1 == bars.len() {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#333\">{}</text>",
                x + bar_width / 2,
                HEIGHT - 6,
                escape(&b.label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_day_and_escape_text() {
        let svg = bars(
            "CNY <30 days>",
            &[
                Bar {
                    label: "11-01".into(),
                    due_minor: 1000,
                    collected_minor: 500,
                    title: "a & b".into(),
                },
                Bar {
                    label: "11-02".into(),
                    due_minor: 2000,
                    collected_minor: 2000,
                    title: "c".into(),
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("aria-label=\"CNY &lt;30 days&gt;\""));
        assert!(svg.contains("<title>a &amp; b</title>"));
        // The largest day fills the plot (140 px); half of the first day is 35 px.
        assert!(svg.contains("height=\"140\""), "{svg}");
        assert!(svg.contains("height=\"35\""), "{svg}");
        assert!(!svg.contains("style="));
        assert_eq!(bars("x", &[]).matches("<rect").count(), 0);
    }
}
