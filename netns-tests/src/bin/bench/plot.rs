//! The allocation curves as an SVG chart, for the README: no plotting dependency for a few
//! polylines and labels. Two panels, each with linear axes: every curve over the shortest
//! curve's range (host-local's 5,000 would be a sliver of a 65,000-wide axis), and each
//! longer curve alone over its whole range, on its own scale.

use std::fmt::Write;

use crate::alloc::{Curve, WINDOW};

const PANEL_WIDTH: f64 = 460.0;
const HEIGHT: f64 = 380.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 48.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 28.0;
const COLOURS: [&str; 2] = ["#1f77b4", "#d62728"];

/// One panel: which curves (by index), over which range of fill levels.
struct Panel {
    title: String,
    curves: Vec<usize>,
    max_x: f64,
}

pub fn svg(curves: &[Curve]) -> String {
    let shortest = curves.iter().map(|c| c.count).min().unwrap_or(WINDOW);
    let mut panels = vec![Panel {
        title: format!("all, to {shortest} allocations"),
        curves: (0..curves.len()).collect(),
        max_x: shortest as f64,
    }];
    for (i, curve) in curves.iter().enumerate() {
        if curve.count > shortest {
            panels.push(Panel {
                title: format!("{}, to {}", curve.label, curve.count),
                curves: vec![i],
                max_x: curve.count as f64,
            });
        }
    }
    let width = PANEL_WIDTH * panels.len() as f64;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Median ADD of {WINDOW} allocations in a row, IPAM alone, by addresses already allocated</text>"#,
        width / 2.0
    );
    for (i, curve) in curves.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="40" fill="{}">&#9679; {}</text>"#,
            LEFT + 260.0 * i as f64,
            COLOURS[i % COLOURS.len()],
            curve.label
        );
    }
    for (p, panel) in panels.iter().enumerate() {
        draw(&mut out, PANEL_WIDTH * p as f64, panel, curves);
    }
    out.push_str("</svg>\n");
    out
}

fn draw(out: &mut String, offset: f64, panel: &Panel, curves: &[Curve]) {
    let points = |i: usize| {
        curves[i]
            .windows
            .iter()
            .filter(|(start, _)| *start as f64 <= panel.max_x)
            .copied()
            .collect::<Vec<_>>()
    };
    let highest = panel
        .curves
        .iter()
        .flat_map(|&i| points(i))
        .map(|(_, ms)| ms)
        .fold(1.0, f64::max);
    let y_step = tick_step(highest * 1.05);
    let max_y = (highest * 1.05 / y_step).ceil() * y_step;
    let x_step = tick_step(panel.max_x);
    let x = |fill: f64| offset + LEFT + fill / panel.max_x * (PANEL_WIDTH - LEFT - RIGHT);
    let y = |ms: f64| HEIGHT - BOTTOM - ms / max_y * (HEIGHT - TOP - BOTTOM);

    let (x0, y0) = (x(0.0), y(0.0));
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x(panel.max_x)) / 2.0,
        TOP - 6.0,
        panel.title
    );
    let _ = writeln!(
        out,
        r#"<path d="M{x0} {} V{y0} H{}" stroke="black" fill="none"/>"#,
        y(max_y),
        x(panel.max_x)
    );
    let ticks = |step: f64, max: f64| {
        (0..)
            .map(move |i| f64::from(i) * step)
            .take_while(move |v| *v <= max * 1.0001)
    };
    for value in ticks(x_step, panel.max_x) {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            x(value),
            y0 + 18.0,
            value
        );
    }
    let decimals = usize::from(y_step < 1.0);
    for ms in ticks(y_step, max_y) {
        let _ = writeln!(
            out,
            r#"<path d="M{x0} {y} h-4" stroke="black"/><text x="{}" y="{}" text-anchor="end">{ms:.decimals$}</text>"#,
            x0 - 6.0,
            y(ms) + 4.0,
            y = y(ms)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">addresses already allocated</text>"#,
        (x0 + x(panel.max_x)) / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">ms</text>"#,
        offset + 14.0,
        HEIGHT / 2.0,
        offset + 14.0,
        HEIGHT / 2.0
    );
    for &i in &panel.curves {
        let colour = COLOURS[i % COLOURS.len()];
        let points = points(i);
        let line: Vec<String> = points
            .iter()
            .map(|&(start, ms)| format!("{:.1},{:.1}", x(start as f64), y(ms)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" stroke="{colour}" stroke-width="1.5" fill="none"/>"#,
            line.join(" ")
        );
        // A dot per timed window: the line between two dots is not measured.
        for &(start, ms) in &points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                x(start as f64),
                y(ms)
            );
        }
    }
}

/// A round tick step (1, 2, 2.5 or 5 times a power of ten) giving at most 7 ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let magnitude = 10f64.powf((max / 7.0).log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| max / step <= 7.0)
        .unwrap_or(10.0 * magnitude)
}
