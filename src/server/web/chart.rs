//! Bar charts as inline SVG, drawn on the server.
//!
//! Hand-rolled rather than `plotters`: a bar chart is rectangles and labels, and drawing it here
//! keeps it themable by the page's CSS (light/dark through classes, no inline style the
//! Content-Security-Policy would refuse), accessible (`role="img"`, a title, every value also in
//! the table beside it), escaped by maud like all other text, and free of font and image
//! dependencies.

use maud::{html, Markup};

use super::format::compact;

const WIDTH: f64 = 640.0;
const BAR: f64 = 22.0;
const GAP: f64 = 6.0;
const LABEL_W: f64 = 170.0;
const VALUE_W: f64 = 64.0;
/// Longer labels are cut (the table has them whole).
const LABEL_CHARS: usize = 24;
/// More bars than this are not drawn (the table has them all).
pub const MAX_BARS: usize = 40;

fn cut_label(s: &str) -> String {
    if s.chars().count() <= LABEL_CHARS {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(LABEL_CHARS - 1).collect();
        out.push('…');
        out
    }
}

/// Horizontal bars, one per (label, value), scaled to the largest value.
pub fn bars(title: &str, data: &[(String, f64)]) -> Markup {
    let data = &data[..data.len().min(MAX_BARS)];
    let max = data
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let height = (data.len() as f64 * (BAR + GAP) + GAP).max(BAR + 2.0 * GAP);
    let span = WIDTH - LABEL_W - VALUE_W;
    html! {
        figure.chart {
            figcaption { (title) }
            svg role="img" viewBox=(format!("0 0 {WIDTH} {height}")) preserveAspectRatio="xMinYMin meet" {
                title { (title) }
                @if data.is_empty() {
                    text.lbl x="8" y=(BAR) { "no data" }
                }
                @for (i, (label, value)) in data.iter().enumerate() {
                    @let y = GAP + i as f64 * (BAR + GAP);
                    @let v = if value.is_finite() { value.max(0.0) } else { 0.0 };
                    @let w = if max > 0.0 { (v / max * span).max(1.0) } else { 1.0 };
                    g {
                        title { (label) ": " (compact(*value)) }
                        text.lbl x=(LABEL_W - 8.0) y=(y + BAR * 0.7) text-anchor="end" { (cut_label(label)) }
                        rect.bar x=(LABEL_W) y=(y) width=(format!("{w:.1}")) height=(BAR) rx="3" {}
                        text.val x=(LABEL_W + w + 6.0) y=(y + BAR * 0.7) { (compact(*value)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_escape_labels() {
        let svg = bars(
            "Tokens",
            &[
                ("<b>m</b>".into(), 100.0),
                ("small".into(), 25.0),
                ("nan".into(), f64::NAN),
            ],
        )
        .into_string();
        let widths: Vec<f64> = svg
            .match_indices("width=\"")
            .map(|(i, _)| {
                let rest = &svg[i + 7..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(widths.len(), 3);
        assert!((widths[0] / widths[1] - 4.0).abs() < 0.01, "{widths:?}");
        assert_eq!(widths[2], 1.0);
        assert!(!svg.contains("<b>") && svg.contains("&lt;b&gt;"));
        assert!(bars("x", &[]).into_string().contains("no data"));
    }

    #[test]
    fn many_bars_are_capped() {
        let data: Vec<(String, f64)> = (0..100).map(|i| (format!("k{i}"), i as f64)).collect();
        assert_eq!(bars("x", &data).into_string().matches("<rect").count(), MAX_BARS);
    }
}
