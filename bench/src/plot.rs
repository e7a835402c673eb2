//! The plot of a load run: throughput and payment latency, second by
//! second, as an SVG file.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::record::Second;

/// Size of the picture, in pixels.
const SIZE: (u32, u32) = (960, 640);

/// One second of the run as plotted.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Point {
    /// Seconds since the start of the run at the start of this second.
    pub second: u64,
    /// Operations answered in this second.
    pub operations: u64,
    /// Payments accepted in this second.
    pub payments: u64,
    /// Operations that did not end as they should.
    pub errors: u64,
    /// Median latency of the payments accepted, in milliseconds.
    pub payment_p50_ms: f64,
    /// 99th percentile of the same.
    pub payment_p99_ms: f64,
}

/// The points of a timeline, one per whole second of a run that lasted
/// `run` (the last, partial second would show a fall that never was).
pub fn points(timeline: &[Second], run: std::time::Duration) -> Vec<Point> {
    timeline
        .iter()
        .take(run.as_secs() as usize)
        .enumerate()
        .map(|(index, second)| {
            let ms = |quantile: f64| {
                second.payment_latency_us.value_at_quantile(quantile) as f64 / 1000.0
            };
            Point {
                second: index as u64,
                operations: second.operations,
                payments: second.payments,
                errors: second.errors,
                payment_p50_ms: ms(0.50),
                payment_p99_ms: ms(0.99),
            }
        })
        .collect()
}

/// Draws `points` to an SVG file at `path`: operations and payments per
/// second above, payment latency p50 and p99 below, and a line where the
/// warm-up of `warm_up_secs` ends. `title` heads the picture.
pub fn draw(path: &Path, title: &str, points: &[Point], warm_up_secs: f64) -> anyhow::Result<()> {
    let plotted = |error: DrawingAreaErrorKind<std::io::Error>| {
        anyhow::anyhow!("drawing the plot {}: {error}", path.display())
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plotted)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(plotted)?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2 - 20);

    let end = points.last().map_or(1.0, |point| point.second as f64 + 1.0);
    let highest_rate = points
        .iter()
        .map(|point| point.operations.max(point.payments))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut rates = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..end, 0.0..highest_rate * 1.1)
        .map_err(plotted)?;
    rates
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("seconds since start")
        .y_desc("per second")
        .draw()
        .map_err(plotted)?;
    let series = [
        ("operations", BLUE, point_operations as fn(&Point) -> f64),
        ("payments accepted", GREEN, point_payments),
        ("errors", RED, point_errors),
    ];
    for (label, colour, value) in series {
        rates
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|point| (point.second as f64 + 0.5, value(point))),
                colour.stroke_width(2),
            ))
            .map_err(plotted)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    draw_warm_up(&mut rates, warm_up_secs, highest_rate * 1.1).map_err(plotted)?;
    rates
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plotted)?;

    let highest_latency = points
        .iter()
        .map(|point| point.payment_p99_ms)
        .fold(0.0, f64::max)
        .max(0.1);
    let mut latency = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..end, 0.0..highest_latency * 1.1)
        .map_err(plotted)?;
    latency
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("seconds since start")
        .y_desc("payment latency, ms")
        .draw()
        .map_err(plotted)?;
    let series = [
        ("p50", BLUE, point_p50 as fn(&Point) -> f64),
        ("p99", MAGENTA, point_p99),
    ];
    for (label, colour, value) in series {
        latency
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter(|point| point.payments > 0)
                    .map(|point| (point.second as f64 + 0.5, value(point))),
                colour.stroke_width(2),
            ))
            .map_err(plotted)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    draw_warm_up(&mut latency, warm_up_secs, highest_latency * 1.1).map_err(plotted)?;
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plotted)?;

    root.present().map_err(plotted)?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A dashed grey line at the end of the warm-up, if there was one.
fn draw_warm_up(
    chart: &mut Chart<'_, '_>,
    warm_up_secs: f64,
    top: f64,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    if warm_up_secs <= 0.0 {
        return Ok(());
    }
    chart
        .draw_series(DashedLineSeries::new(
            [(warm_up_secs, 0.0), (warm_up_secs, top)],
            6,
            4,
            BLACK.mix(0.5).stroke_width(1),
        ))?
        .label("end of warm-up")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
    Ok(())
}

fn point_operations(point: &Point) -> f64 {
    point.operations as f64
}

fn point_payments(point: &Point) -> f64 {
    point.payments as f64
}

fn point_errors(point: &Point) -> f64 {
    point.errors as f64
}

fn point_p50(point: &Point) -> f64 {
    point.payment_p50_ms
}

fn point_p99(point: &Point) -> f64 {
    point.payment_p99_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_an_svg_with_both_charts_and_the_warm_up() {
        let points: Vec<Point> = (0..10)
            .map(|second| Point {
                second,
                operations: 1000 + second * 10,
                payments: 900 + second * 10,
                errors: second % 3,
                payment_p50_ms: 1.5,
                payment_p99_ms: 4.0 + second as f64 / 10.0,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        draw(&path, "a run", &points, 2.0).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "a run",
            "per second",
            "payment latency, ms",
            "p99",
            "end of warm-up",
        ] {
            assert!(svg.contains(text), "the plot lacks {text:?}");
        }
        // One polyline per series: three rates, two latencies, two warm-up
        // marks (dashed lines are drawn as several segments).
        assert!(svg.matches("<polyline").count() >= 5);
    }

    #[test]
    fn points_carry_each_seconds_percentiles() {
        let mut second = Second::new();
        for latency in [1000, 2000, 3000, 100_000] {
            second.payments += 1;
            second.payment_latency_us.record(latency).unwrap();
        }
        let points = points(
            &[second, Second::new()],
            std::time::Duration::from_millis(1500),
        );
        // The partial second at the end is left out.
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].second, 0);
        assert_eq!(points[0].payments, 4);
        assert!((points[0].payment_p50_ms - 2.0).abs() < 0.05);
        assert!((points[0].payment_p99_ms - 100.0).abs() < 1.0);
    }
}
