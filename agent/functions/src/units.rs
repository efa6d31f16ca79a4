//! Unit conversion for the `convert` step: linear conversions within one dimension,
//! through the dimension's base unit (`value * factor + offset` gives the base value).
//! Unit names are the ones drivers write (`degC`, `m/s`, `hPa`, ...), with common aliases.

/// A unit's names, and `factor`, `offset` to its dimension's base unit.
type Unit = (&'static [&'static str], f64, f64);

/// Each dimension's units; the first row is the base.
const DIMENSIONS: &[(&str, &[Unit])] = &[
    (
        "temperature",
        &[
            (&["degC", "°C", "C", "celsius"], 1.0, 0.0),
            (&["K", "kelvin"], 1.0, -273.15),
            (
                &["degF", "°F", "F", "fahrenheit"],
                5.0 / 9.0,
                -32.0 * 5.0 / 9.0,
            ),
        ],
    ),
    (
        "speed",
        &[
            (&["m/s", "mps"], 1.0, 0.0),
            (&["km/h", "kph", "kmh"], 1.0 / 3.6, 0.0),
            (&["kn", "kt", "knots"], 1852.0 / 3600.0, 0.0),
            (&["mph"], 0.44704, 0.0),
            (&["ft/s"], 0.3048, 0.0),
        ],
    ),
    (
        "pressure",
        &[
            (&["Pa"], 1.0, 0.0),
            (&["hPa", "mbar", "mb"], 100.0, 0.0),
            (&["kPa"], 1000.0, 0.0),
            (&["bar"], 100_000.0, 0.0),
            (&["atm"], 101_325.0, 0.0),
            (&["inHg"], 3386.389, 0.0),
            (&["mmHg", "torr", "Torr"], 133.322_387_415, 0.0),
            (&["psi"], 6_894.757_293, 0.0),
        ],
    ),
    (
        "length",
        &[
            (&["m"], 1.0, 0.0),
            (&["mm"], 0.001, 0.0),
            (&["cm"], 0.01, 0.0),
            (&["km"], 1000.0, 0.0),
            (&["in"], 0.0254, 0.0),
            (&["ft"], 0.3048, 0.0),
            (&["mi"], 1609.344, 0.0),
        ],
    ),
    (
        "angle",
        &[
            (&["deg", "°"], 1.0, 0.0),
            (&["rad"], 180.0 / std::f64::consts::PI, 0.0),
            (&["arcmin"], 1.0 / 60.0, 0.0),
            (&["arcsec"], 1.0 / 3600.0, 0.0),
        ],
    ),
    (
        "ratio",
        &[
            (&["1", "fraction"], 1.0, 0.0),
            (&["%", "percent"], 0.01, 0.0),
        ],
    ),
    (
        "time",
        &[
            (&["s"], 1.0, 0.0),
            (&["ms"], 0.001, 0.0),
            (&["us", "µs"], 1e-6, 0.0),
            (&["min"], 60.0, 0.0),
            (&["h"], 3600.0, 0.0),
        ],
    ),
];

fn find(unit: &str) -> Option<(&'static str, f64, f64)> {
    DIMENSIONS.iter().find_map(|(dim, units)| {
        units
            .iter()
            .find(|(names, _, _)| names.contains(&unit))
            .map(|(_, f, o)| (*dim, *f, *o))
    })
}

/// `y = x * factor + offset` converting `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    pub factor: f64,
    pub offset: f64,
}

impl Conversion {
    pub fn apply(&self, x: f64) -> f64 {
        x * self.factor + self.offset
    }
}

/// The conversion between two units, or why there is none.
pub fn conversion(from: &str, to: &str) -> Result<Conversion, String> {
    let known = || {
        DIMENSIONS
            .iter()
            .map(|(d, u)| {
                format!(
                    "{d}: {}",
                    u.iter().map(|x| x.0[0]).collect::<Vec<_>>().join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (fd, ff, fo) =
        find(from).ok_or_else(|| format!("unknown unit {from:?}; known: {}", known()))?;
    let (td, tf, to_) =
        find(to).ok_or_else(|| format!("unknown unit {to:?}; known: {}", known()))?;
    if fd != td {
        return Err(format!("cannot convert {from:?} ({fd}) to {to:?} ({td})"));
    }
    // base = x*ff + fo; y = (base - to_) / tf
    Ok(Conversion {
        factor: ff / tf,
        offset: (fo - to_) / tf,
    })
}

/// Whether `unit` names a unit this module knows.
pub fn is_known(unit: &str) -> bool {
    find(unit).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(from: &str, to: &str, x: f64) -> f64 {
        conversion(from, to).expect("conversion").apply(x)
    }

    #[test]
    fn conversions_match_hand_computed_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
        assert!(close(conv("degC", "degF", 100.0), 212.0));
        assert!(close(conv("degF", "degC", -40.0), -40.0));
        assert!(close(conv("K", "degC", 273.15), 0.0));
        assert!(close(conv("degC", "K", 20.0), 293.15));
        assert!(close(conv("m/s", "km/h", 10.0), 36.0));
        assert!(close(conv("kn", "m/s", 1.0), 0.514_444_444_444));
        assert!(close(conv("hPa", "inHg", 1013.25), 29.921_252_401_894_76));
        assert!(close(conv("mbar", "hPa", 990.0), 990.0));
        assert!(close(conv("rad", "deg", std::f64::consts::PI), 180.0));
        assert!(close(conv("%", "1", 45.0), 0.45));
    }

    #[test]
    fn different_dimensions_and_unknown_units_are_refused_with_the_reason() {
        let e = conversion("degC", "m/s").unwrap_err();
        assert!(e.contains("temperature") && e.contains("speed"), "{e}");
        let e = conversion("furlong", "m").unwrap_err();
        assert!(e.starts_with("unknown unit \"furlong\""), "{e}");
    }
}
