//! The time axis the binding timelines and media strips share, so an expiry in one lines up
//! with the packet that arrived after it in the other.

use std::time::SystemTime;

use svg::node::element::{Group, Line, Text};

/// Seconds from the page's time zero mapped onto `width` pixels after `left`.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    pub start: SystemTime,
    pub secs: f64,
    pub left: f64,
    pub width: f64,
}

impl Axis {
    pub fn new(start: SystemTime, end: SystemTime, left: f64, width: f64) -> Self {
        let secs = end
            .duration_since(start)
            .unwrap_or_default()
            .as_secs_f64()
            .max(0.1);
        Axis {
            start,
            secs,
            left,
            width,
        }
    }

    /// Seconds since time zero.
    pub fn t(&self, at: SystemTime) -> f64 {
        at.duration_since(self.start)
            .unwrap_or_default()
            .as_secs_f64()
    }

    pub fn x(&self, at: SystemTime) -> f64 {
        self.left + self.t(at) / self.secs * self.width
    }

    pub fn right(&self) -> f64 {
        self.left + self.width
    }

    /// Tick marks and labels every whole second (or every few, for long runs) at `y`.
    pub fn ticks(&self, y: f64, height: f64) -> Group {
        let step = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
            .into_iter()
            .find(|s| self.secs / s <= 16.0)
            .unwrap_or(600.0);
        let mut g = Group::new().set("class", "axis");
        let mut s = 0.0;
        while s <= self.secs + 1e-9 {
            let x = self.left + s / self.secs * self.width;
            g = g
                .add(
                    Line::new()
                        .set("x1", x)
                        .set("x2", x)
                        .set("y1", y)
                        .set("y2", y + height),
                )
                .add(
                    Text::new(format!("{s:.0} s"))
                        .set("x", x)
                        .set("y", y - 3.0)
                        .set("text-anchor", "middle"),
                );
            s += step;
        }
        g
    }
}
