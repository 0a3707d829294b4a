//! A run as one SVG picture (`--plot`): the latency percentile distribution on HdrHistogram's
//! log-scale percentile axis, then throughput and p99 (and, with `--rate`, the schedule lag's
//! p99) second by second (a run longer than [`MAX_POINTS`](super::MAX_POINTS) seconds: by
//! intervals of adjacent seconds). Drawn with plotters into a string: no file, no clock.

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::recording::Second;
use super::report::Report;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The picture's size in pixels.
const SIZE: (u32, u32) = (1000, 900);

/// The names of the drawn series, as their legends read (the tests look for them).
pub(crate) const SERIES: [&str; 4] = [
    "latency by percentile",
    "good replies per second",
    "p99 latency per second",
    "p99 schedule lag per second",
];

/// A drawing failure, as text (plotters' errors carry the backend's type).
fn text<E: std::fmt::Debug>(error: E) -> String {
    format!("cannot draw the plot: {error:?}")
}

impl Report {
    /// The run as an SVG document, `title` on top. The per-second panels are drawn only when
    /// the report has per-second histograms (a `bench --json` line read back has none).
    ///
    /// # Errors
    ///
    /// A one-line reason when there is nothing to draw: no request was timed (`stream`).
    pub fn to_svg(&self, title: &str) -> Result<String, String> {
        let latency = self
            .recording
            .latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .ok_or("nothing to plot: no request was timed (stream mode times none)")?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(text)?;
            let root = root.titled(title, ("sans-serif", 18)).map_err(text)?;
            let per_second = !self.recording.seconds.is_empty();
            let (top, bottom) = if per_second {
                root.split_vertically(SIZE.1 / 2)
            } else {
                root.split_vertically(SIZE.1)
            };
            distribution(&top, latency)?;
            if per_second {
                let (middle, lowest) = bottom.split_vertically((SIZE.1 - 40) / 4);
                self.throughput(&middle)?;
                self.p99(&lowest)?;
            }
            root.present().map_err(text)?;
        }
        Ok(svg)
    }

    /// Each of the recording's seconds (or merged intervals) with the middle of its time span,
    /// in seconds from the run's start, and where the last ends.
    fn over_time(&self) -> (Vec<(f64, &Second)>, f64) {
        let every = self.recording.interval.as_secs_f64();
        let points = self
            .recording
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 * every + s.length.as_secs_f64() / 2.0, s))
            .collect();
        let end = self.recording.seconds.last().map_or(1.0, |s| {
            (self.recording.seconds.len() - 1) as f64 * every + s.length.as_secs_f64()
        });
        (points, end.max(1.0))
    }

    /// The x axis' name: seconds, or the merged intervals of a long run.
    fn x_desc(&self) -> String {
        match self.recording.interval.as_secs() {
            0 | 1 => "second of the run".into(),
            n => format!("second of the run ({n} s a point)"),
        }
    }

    fn throughput(&self, area: &Area<'_>) -> Result<(), String> {
        let (over_time, seconds) = self.over_time();
        let points: Vec<(f64, f64)> = over_time
            .iter()
            .map(|(x, s)| (*x, s.requests_per_second()))
            .collect();
        let top = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..seconds, 0f64..top)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc())
            .y_desc("replies/s")
            .draw()
            .map_err(text)?;
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
            .map_err(text)?
            .label(SERIES[1])
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        legend(&mut chart)
    }

    fn p99(&self, area: &Area<'_>) -> Result<(), String> {
        let ms = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1e6;
        let (over_time, seconds) = self.over_time();
        let latency: Vec<(f64, f64)> = over_time
            .iter()
            .filter(|(_, s)| !s.latency.is_empty())
            .map(|(x, s)| (*x, ms(&s.latency)))
            .collect();
        let lag: Vec<(f64, f64)> = over_time
            .iter()
            .filter(|(_, s)| self.rate.is_some() && !s.lag.is_empty())
            .map(|(x, s)| (*x, ms(&s.lag)))
            .collect();
        let top = latency
            .iter()
            .chain(&lag)
            .map(|p| p.1)
            .fold(0.001, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..seconds, 0f64..top)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc())
            .y_desc("ms")
            .draw()
            .map_err(text)?;
        chart
            .draw_series(LineSeries::new(latency, RED.stroke_width(2)))
            .map_err(text)?
            .label(SERIES[2])
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        if self.rate.is_some() {
            chart
                .draw_series(LineSeries::new(lag, GREEN.stroke_width(2)))
                .map_err(text)?
                .label(SERIES[3])
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
        }
        legend(&mut chart)
    }
}

fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(text)
}

/// x = log10(1 / (1 - q)): 0 is the 0th percentile, 1 the 90th, 2 the 99th, 3 the 99.9th.
fn nines(quantile: f64, top: f64) -> f64 {
    if quantile >= 1.0 {
        top
    } else {
        (-(1.0 - quantile).log10()).min(top)
    }
}

/// The percentile at `x` on the nines axis: `50%`, `99.9%`.
fn percentile_label(x: &f64) -> String {
    let decimals = (x.ceil() as i32 - 2).max(0) as usize;
    format!("{:.*}%", decimals, 100.0 * (1.0 - 10f64.powf(-x)))
}

fn distribution(area: &Area<'_>, h: &Histogram<u64>) -> Result<(), String> {
    // As far as the count reaches: with 10,000 values the 99.99th is the last that means much.
    let top = (h.len() as f64).log10().ceil().clamp(2.0, 7.0);
    let points: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            (
                nines(v.quantile_iterated_to(), top),
                v.value_iterated_to() as f64 / 1e6,
            )
        })
        .collect();
    let highest = h.max() as f64 / 1e6 * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..top, 0f64..highest.max(0.001))
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_labels(top as usize + 1) // on the whole nines: 0%, 90%, 99%, ...
        .x_label_formatter(&percentile_label)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(text)?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(text)?
        .label(SERIES[0])
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    // The median, between the axis' whole nines.
    let median = 2f64.log10();
    chart
        .draw_series(std::iter::once(PathElement::new(
            [(median, 0.0), (median, highest)],
            BLACK.mix(0.3),
        )))
        .map_err(text)?;
    chart
        .draw_series(std::iter::once(Text::new(
            percentile_label(&median),
            (median, highest),
            ("sans-serif", 12),
        )))
        .map_err(text)?;
    legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_reads_in_nines() {
        let labels: Vec<String> = [2f64.log10(), 1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(percentile_label)
            .collect();
        assert_eq!(labels, ["50%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(nines(1.0, 4.0), 4.0);
        assert!((nines(0.999, 9.0) - 3.0).abs() < 1e-9);
    }
}
