//! The allocation curves as an SVG line chart, for the README: no plotting dependency for
//! two polylines and a few labels.

use std::fmt::Write;

use crate::alloc::{Curve, WINDOW};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 56.0;
const COLOURS: [&str; 2] = ["#1f77b4", "#d62728"];

pub fn svg(curves: &[Curve]) -> String {
    let max_x = curves
        .iter()
        .map(|c| c.windows.len() * WINDOW)
        .max()
        .unwrap_or(WINDOW) as f64;
    let max_y = curves
        .iter()
        .flat_map(|c| c.windows.iter().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let x = |allocations: f64| MARGIN + allocations / max_x * (WIDTH - 2.0 * MARGIN);
    let y = |ms: f64| HEIGHT - MARGIN - ms / max_y * (HEIGHT - 2.0 * MARGIN);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Median ADD per window of {WINDOW} allocations, IPAM alone</text>"#,
        WIDTH / 2.0
    );
    // Axes with five ticks each.
    let (x0, y0) = (x(0.0), y(0.0));
    let _ = writeln!(
        out,
        r#"<path d="M{x0} {} V{y0} H{}" stroke="black" fill="none"/>"#,
        y(max_y),
        x(max_x)
    );
    for i in 0..=5 {
        let value = max_x * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            x(value),
            y0 + 18.0,
            value
        );
        let ms = max_y * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{ms:.1}</text>"#,
            x0 - 6.0,
            y(ms) + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">addresses allocated</text>"#,
        WIDTH / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        out,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">ms</text>"#,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    for (i, curve) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = curve
            .windows
            .iter()
            .enumerate()
            .map(|(w, ms)| format!("{:.1},{:.1}", x(((w + 1) * WINDOW) as f64), y(*ms)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" stroke="{colour}" stroke-width="1.5" fill="none"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            x0 + 12.0,
            y(max_y) + 16.0 * (i as f64 + 1.0),
            curve.label
        );
    }
    out.push_str("</svg>\n");
    out
}
