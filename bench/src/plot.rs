//! `--plot FILE.svg`: the latency percentile spectrum and the throughput over time, drawn as
//! a small hand-written SVG (no plotting library: two line charts do not need one).
//!
//! Top: latency (us, linear) against percentile on a "nines" scale (x = -log10(1 - q): 90% at
//! 1, 99% at 2, 99.9% at 3 ...), as HdrHistogram plots do. Bottom: MB/s per 100 ms interval
//! against time, with the reference the scenario is compared with as a dashed line.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use crate::latency::LatencyHistogram;
use crate::throughput::{ThroughputSample, ThroughputTimeline};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 330.0;
const TITLE_HEIGHT: f64 = 40.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// Spectrum resolution in nines (20 points per decade).
const SPECTRUM_STEP_NINES: f64 = 0.05;
const Y_TICKS: usize = 5;

/// What one plot shows.
#[derive(Clone, Copy, Debug)]
pub struct PlotInput<'a> {
    /// Heading, e.g. `ringlog-bench produce: 1024 B records, durable`.
    pub title: &'a str,
    /// The latency samples.
    pub latency: &'a LatencyHistogram,
    /// Throughput per interval.
    pub throughput: &'a ThroughputTimeline,
    /// Length of the run in seconds (where the last interval ends).
    pub seconds: f64,
    /// `(label, MB/s)` of the reference to draw as a dashed line.
    pub reference: Option<(&'a str, f64)>,
}

/// Writes the SVG of `input` to `path`.
pub fn write_svg(path: &Path, input: &PlotInput<'_>) -> io::Result<()> {
    fs::write(path, render_svg(input))
}

/// The SVG document of `input`.
pub fn render_svg(input: &PlotInput<'_>) -> String {
    let height = TITLE_HEIGHT + 2.0 * PANEL_HEIGHT;
    let mut svg = String::with_capacity(16 * 1024);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="26" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(input.title)
    );
    latency_panel(&mut svg, input.latency, TITLE_HEIGHT);
    throughput_panel(
        &mut svg,
        &input.throughput.samples(input.seconds),
        input.throughput.interval_ms(),
        input.reference,
        TITLE_HEIGHT + PANEL_HEIGHT,
    );
    svg.push_str("</svg>\n");
    svg
}

/// The plotting area of a panel whose top edge is at `top`.
#[derive(Clone, Copy, Debug)]
struct Area {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    x_max: f64,
    y_max: f64,
}

impl Area {
    fn new(top: f64, x_max: f64, y_max: f64) -> Self {
        Self {
            left: MARGIN_LEFT,
            top: top + MARGIN_TOP,
            width: WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
            height: PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
            x_max: x_max.max(f64::MIN_POSITIVE),
            y_max: y_max.max(f64::MIN_POSITIVE),
        }
    }

    fn x(&self, value: f64) -> f64 {
        self.left + self.width * (value / self.x_max).clamp(0.0, 1.0)
    }

    fn y(&self, value: f64) -> f64 {
        self.top + self.height * (1.0 - (value / self.y_max).clamp(0.0, 1.0))
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

fn latency_panel(svg: &mut String, latency: &LatencyHistogram, top: f64) {
    let points = latency.spectrum(SPECTRUM_STEP_NINES);
    let nines_max = points.last().map_or(1.0, |point| point.0.ceil().max(1.0));
    let y_max = nice_ceiling(latency.max_us() as f64);
    let area = Area::new(top, nines_max, y_max);
    panel_frame(
        svg,
        &area,
        "Latency by percentile",
        "percentile",
        "latency (us)",
    );
    // Whole nines only: 0%, 90%, 99%, 99.9% ...
    for nines in 0..=(nines_max as u32) {
        let x = area.x(f64::from(nines));
        x_tick(svg, &area, x, &nines_label(nines));
    }
    y_ticks(svg, &area);
    if points.is_empty() {
        no_samples(svg, &area);
        return;
    }
    let path = points
        .iter()
        .map(|&(nines, latency_us)| {
            format!("{:.1},{:.1}", area.x(nines), area.y(latency_us as f64))
        })
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(
        svg,
        r##"<polyline points="{path}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##
    );
}

fn throughput_panel(
    svg: &mut String,
    samples: &[ThroughputSample],
    interval_ms: u64,
    reference: Option<(&str, f64)>,
    top: f64,
) {
    let seconds = samples.last().map_or(1.0, |sample| sample.end_s);
    let sample_max = samples
        .iter()
        .map(|sample| sample.mb_per_s)
        .fold(0.0, f64::max);
    let reference_max = reference.map_or(0.0, |(_, mb_per_s)| mb_per_s);
    let area = Area::new(top, seconds, nice_ceiling(sample_max.max(reference_max)));
    panel_frame(
        svg,
        &area,
        &format!("Throughput per {interval_ms} ms (MB = 10^6 bytes)"),
        "time (s)",
        "MB/s",
    );
    let x_step = nice_step(seconds);
    let mut tick = 0.0;
    while tick <= seconds + x_step * 1e-9 {
        x_tick(svg, &area, area.x(tick), &format_number(tick));
        tick += x_step;
    }
    y_ticks(svg, &area);
    if let Some((label, mb_per_s)) = reference {
        let y = area.y(mb_per_s);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d73a49" stroke-dasharray="6 4"/>"##,
            area.left,
            area.left + area.width
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d73a49">{} {:.0} MB/s</text>"##,
            area.left + area.width - 4.0,
            y - 5.0,
            escape(label),
            mb_per_s
        );
    }
    if samples.is_empty() {
        no_samples(svg, &area);
        return;
    }
    // A step line: each interval's rate holds for the whole interval.
    let mut path = String::with_capacity(samples.len() * 24);
    for sample in samples {
        let y = area.y(sample.mb_per_s);
        let _ = write!(
            path,
            "{:.1},{y:.1} {:.1},{y:.1} ",
            area.x(sample.start_s),
            area.x(sample.end_s)
        );
    }
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##,
        path.trim_end()
    );
}

fn panel_frame(svg: &mut String, area: &Area, title: &str, x_label: &str, y_label: &str) {
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"##,
        area.left,
        area.top - 12.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
        area.left, area.top, area.width, area.height
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        area.left + area.width / 2.0,
        area.bottom() + 38.0,
        escape(x_label)
    );
    let middle = area.top + area.height / 2.0;
    let _ = writeln!(
        svg,
        r##"<text x="18" y="{middle:.1}" text-anchor="middle" transform="rotate(-90 18 {middle:.1})">{}</text>"##,
        escape(y_label)
    );
}

fn x_tick(svg: &mut String, area: &Area, x: f64, label: &str) {
    let _ = writeln!(
        svg,
        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
        area.top,
        area.bottom()
    );
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        area.bottom() + 18.0,
        escape(label)
    );
}

fn y_ticks(svg: &mut String, area: &Area) {
    for index in 0..=Y_TICKS {
        let value = area.y_max * index as f64 / Y_TICKS as f64;
        let y = area.y(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            area.left,
            area.left + area.width
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            area.left - 6.0,
            y + 4.0,
            format_number(value)
        );
    }
}

fn no_samples(svg: &mut String, area: &Area) {
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no samples</text>"##,
        area.left + area.width / 2.0,
        area.top + area.height / 2.0
    );
}

/// `0%`, `90%`, `99%`, `99.9%`, ... for 0, 1, 2, 3 nines.
fn nines_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        more => format!("99.{}%", "9".repeat(more as usize - 2)),
    }
}

/// A round step (1, 2, 2.5 or 5 times a power of ten) giving about five intervals up to `max`.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / Y_TICKS as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// The smallest multiple of [`nice_step`] at or above `max` (1 for nothing to show).
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let step = nice_step(max);
    (max / step).ceil() * step
}

/// A tick label without needless decimals.
fn format_number(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Text safe inside SVG elements.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn svg_has_both_panels_and_is_well_formed_enough() {
        let mut latency = LatencyHistogram::new();
        for latency_us in 1..=10_000 {
            latency.record_us(latency_us);
        }
        let mut throughput = ThroughputTimeline::default();
        for tenth in 0..30 {
            throughput.record(Duration::from_millis(tenth * 100), 50_000_000);
        }
        let svg = render_svg(&PlotInput {
            title: "produce <1 KiB> & more",
            latency: &latency,
            throughput: &throughput,
            seconds: 3.0,
            reference: Some(("raw disk write", 600.0)),
        });
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("produce &lt;1 KiB&gt; &amp; more"));
        assert!(svg.contains("99.99%"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("raw disk write 600 MB/s"));
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }

    #[test]
    fn empty_inputs_still_draw() {
        let svg = render_svg(&PlotInput {
            title: "net",
            latency: &LatencyHistogram::new(),
            throughput: &ThroughputTimeline::default(),
            seconds: 0.0,
            reference: None,
        });
        assert_eq!(svg.matches("no samples").count(), 2);
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(4321.0), 5000.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_step(3.0), 1.0);
        assert_eq!(nines_label(4), "99.99%");
    }
}
