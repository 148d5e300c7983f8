//! The element property table and histogram settings of the paper group's `chemhist` package (MIT,
//! `data/LICENSE.txt`), embedded so descriptors need no files at run time.

use std::sync::OnceLock;

const ELEMENT_CSV: &str = include_str!("data/def_elem_property.csv");
const SETTINGS_CSV: &str = include_str!("data/def_hist_settings.csv");

/// The twelve properties in the table's column order (the descriptor's block order).
pub const PROPERTIES: [&str; 12] = ["AN", "EN", "MP", "PN", "PG", "MN", "AW", "AR", "IR", "CoR", "CrR", "spdf"];

/// Histogram range and smoothing for one property.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistSetting {
    pub min: f64,
    pub max: f64,
    pub bins: usize,
    /// Gaussian σ in property units; 0 = not smoothed.
    pub sigma: f64,
}

#[derive(Debug, Clone)]
pub struct Element {
    pub z: usize,
    pub symbol: String,
    /// Property values in `PROPERTIES` order; `None` where the table says `nodata`.
    pub props: [Option<f64>; 12],
}

#[derive(Debug)]
pub struct ElementTable {
    /// Index = Z − 1 (H … No, Z = 1..=102).
    pub elements: Vec<Element>,
    /// Settings in `PROPERTIES` order, after chemhist's `*_his` override (see `settings`).
    pub settings: [HistSetting; 12],
}

impl ElementTable {
    pub fn get() -> &'static ElementTable {
        static TABLE: OnceLock<ElementTable> = OnceLock::new();
        // The embedded table is part of the program; a broken copy is a build defect.
        #[allow(clippy::expect_used)]
        TABLE.get_or_init(|| parse_table().expect("embedded chemhist table is valid"))
    }

    pub fn by_symbol(&self, symbol: &str) -> Option<&Element> {
        self.elements.iter().find(|e| e.symbol == symbol)
    }

    pub fn by_z(&self, z: usize) -> Option<&Element> {
        z.checked_sub(1).and_then(|i| self.elements.get(i))
    }

    pub fn symbol(&self, z: usize) -> &str {
        self.by_z(z).map_or("?", |e| e.symbol.as_str())
    }
}

/// A table cell: a number, `nodata`, or one damaged cell of the original (`[98.` for Tc's atomic
/// weight, read as 98).
fn cell(s: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    if s == "nodata" {
        return Ok(None);
    }
    s.trim_matches(|c| c == '[' || c == ']').parse::<f64>().map(Some).map_err(|_| format!("'{s}' is not a number"))
}

fn parse_table() -> Result<ElementTable, String> {
    let mut lines = ELEMENT_CSV.lines();
    let header: Vec<&str> = lines.next().ok_or("empty element table")?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("no column {name}"));
    let sym_col = col("element_symbol")?;
    let prop_cols: Vec<usize> = PROPERTIES.iter().map(|p| col(p)).collect::<Result<_, _>>()?;
    let mut elements = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let mut props = [None; 12];
        for (k, &c) in prop_cols.iter().enumerate() {
            props[k] = cell(f.get(c).ok_or(format!("line {}: short row", i + 2))?)?;
        }
        let z = props[0].ok_or(format!("line {}: no atomic number", i + 2))? as usize;
        if z != elements.len() + 1 {
            return Err(format!("line {}: atomic numbers not consecutive", i + 2));
        }
        elements.push(Element { z, symbol: f[sym_col].trim().to_string(), props });
    }
    Ok(ElementTable { elements, settings: parse_settings()? })
}

/// chemhist's settings: one column per property (min, max, bin, sigma rows) plus `AN_his`, `PN_his`
/// and `PG_his`, which chemhist copies over `AN`, `PN` and `PG` before building any histogram — so
/// those three use 101, 19 and 19 bins, and each histogram type has 595 bins in all.
fn parse_settings() -> Result<[HistSetting; 12], String> {
    let rows: Vec<Vec<&str>> = SETTINGS_CSV.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split(',').collect()).collect();
    let header = rows.first().ok_or("empty settings")?;
    let row = |name: &str| rows.iter().find(|r| r.first() == Some(&name)).ok_or(format!("no settings row {name}"));
    let (min, max, bin, sigma) = (row("min")?, row("max")?, row("bin")?, row("sigma")?);
    let value = |r: &Vec<&str>, c: usize| -> Result<f64, String> {
        r.get(c).ok_or("short settings row".to_string())?.trim().parse::<f64>().map_err(|e| e.to_string())
    };
    let mut out = [HistSetting { min: 0.0, max: 0.0, bins: 0, sigma: 0.0 }; 12];
    for (k, p) in PROPERTIES.iter().enumerate() {
        let his = format!("{p}_his");
        let c = header
            .iter()
            .position(|h| *h == his)
            .or_else(|| header.iter().position(|h| h == p))
            .ok_or(format!("no settings for {p}"))?;
        out[k] = HistSetting {
            min: value(min, c)?,
            max: value(max, c)?,
            bins: value(bin, c)? as usize,
            sigma: value(sigma, c)?,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_loads() {
        let t = ElementTable::get();
        assert_eq!(t.elements.len(), 102);
        assert_eq!(t.by_symbol("Li").map(|e| e.z), Some(3));
        assert_eq!(t.settings.iter().map(|s| s.bins).sum::<usize>(), 595);
        assert_eq!(t.by_symbol("Tc").and_then(|e| e.props[6]), Some(98.0));
    }
}
