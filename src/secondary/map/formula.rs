//! Chemical formulas → element amounts: fractional amounts (`Li6.4La3Zr1.4Ta0.6O12`), nested
//! parentheses and brackets with multipliers (`Li1.4Al0.4Ti1.6(PO4)3`, `Li0.6[Li0.2Sn0.8S2]`),
//! adducts after `*` or `·` with an optional leading count (`CuSO4·5H2O`, `X*(H2O)18`); spaces are
//! ignored. Repeated elements add up.

use super::elements::ElementTable;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[must_use]
#[error("formula '{formula}': {why}")]
pub struct FormulaError {
    pub formula: String,
    pub why: String,
}

/// Element amounts, merged and sorted by atomic number; every amount > 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    pub amounts: Vec<(usize, f64)>,
}

impl Composition {
    pub fn total(&self) -> f64 {
        self.amounts.iter().map(|a| a.1).sum()
    }

    /// (Z, atomic fraction) pairs.
    pub fn fractions(&self) -> Vec<(usize, f64)> {
        let t = self.total();
        self.amounts.iter().map(|&(z, n)| (z, n / t)).collect()
    }

    pub fn fraction_of(&self, z: usize) -> f64 {
        let t = self.total();
        self.amounts.iter().find(|a| a.0 == z).map_or(0.0, |a| a.1 / t)
    }

    pub fn amount_of(&self, symbol: &str) -> f64 {
        let t = ElementTable::get();
        t.by_symbol(symbol).and_then(|e| self.amounts.iter().find(|a| a.0 == e.z)).map_or(0.0, |a| a.1)
    }

    pub fn contains(&self, symbol: &str) -> bool {
        self.amount_of(symbol) > 0.0
    }

    /// `Li7La3Zr2O12`-style text (amounts with up to 4 decimals, 1 left out).
    pub fn to_formula(&self) -> String {
        let t = ElementTable::get();
        let mut s = String::new();
        for &(z, n) in &self.amounts {
            s.push_str(t.symbol(z));
            if (n - 1.0).abs() > 1e-9 {
                let v = format!("{n:.4}");
                s.push_str(v.trim_end_matches('0').trim_end_matches('.'));
            }
        }
        s
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    formula: &'a str,
}

pub fn parse(formula: &str) -> Result<Composition, FormulaError> {
    let chars: Vec<char> = formula.chars().filter(|c| !c.is_whitespace()).collect();
    let mut p = Parser { chars, pos: 0, formula };
    if p.chars.is_empty() {
        return Err(p.err("empty formula"));
    }
    let mut amounts: Vec<(usize, f64)> = Vec::new();
    loop {
        let count = p.number()?.unwrap_or(1.0);
        let part = p.sequence(0)?;
        if part.is_empty() {
            return Err(p.err_here("expected an element"));
        }
        for (z, n) in part {
            add(&mut amounts, z, n * count);
        }
        match p.peek() {
            None => break,
            Some('*') | Some('·') | Some('•') => p.pos += 1,
            Some(c) => return Err(p.err_here(&format!("unexpected '{c}'"))),
        }
    }
    amounts.retain(|a| a.1 > 0.0);
    if amounts.is_empty() {
        return Err(p.err("all amounts are zero"));
    }
    amounts.sort_by_key(|a| a.0);
    Ok(Composition { amounts })
}

fn add(amounts: &mut Vec<(usize, f64)>, z: usize, n: f64) {
    match amounts.iter_mut().find(|a| a.0 == z) {
        Some(a) => a.1 += n,
        None => amounts.push((z, n)),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn err(&self, why: &str) -> FormulaError {
        FormulaError { formula: self.formula.to_string(), why: why.to_string() }
    }

    fn err_here(&self, why: &str) -> FormulaError {
        self.err(&format!("{why} at character {}", self.pos + 1))
    }

    /// Elements and groups up to a closing bracket or the end of this adduct.
    fn sequence(&mut self, depth: usize) -> Result<Vec<(usize, f64)>, FormulaError> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                'A'..='Z' => {
                    let z = self.element()?;
                    let n = self.number()?.unwrap_or(1.0);
                    add(&mut out, z, n);
                }
                '(' | '[' | '{' => {
                    let close = match c {
                        '(' => ')',
                        '[' => ']',
                        _ => '}',
                    };
                    self.pos += 1;
                    let inner = self.sequence(depth + 1)?;
                    if self.peek() != Some(close) {
                        return Err(self.err_here(&format!("expected '{close}'")));
                    }
                    self.pos += 1;
                    if inner.is_empty() {
                        return Err(self.err_here("empty group"));
                    }
                    let n = self.number()?.unwrap_or(1.0);
                    for (z, k) in inner {
                        add(&mut out, z, k * n);
                    }
                }
                ')' | ']' | '}' => {
                    if depth == 0 {
                        return Err(self.err_here(&format!("unmatched '{c}'")));
                    }
                    break;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn element(&mut self) -> Result<usize, FormulaError> {
        let start = self.pos;
        let mut sym = String::new();
        sym.push(self.chars[self.pos]);
        self.pos += 1;
        if let Some(c) = self.peek().filter(|c| c.is_ascii_lowercase()) {
            sym.push(c);
            self.pos += 1;
        }
        ElementTable::get().by_symbol(&sym).map(|e| e.z).ok_or_else(|| FormulaError {
            formula: self.formula.to_string(),
            why: format!("unknown element '{sym}' at character {}", start + 1),
        })
    }

    /// A non-negative decimal amount, if one starts here.
    fn number(&mut self) -> Result<Option<f64>, FormulaError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        let s: String = self.chars[start..self.pos].iter().collect();
        s.parse::<f64>().map(Some).map_err(|_| FormulaError {
            formula: self.formula.to_string(),
            why: format!("'{s}' is not a number (character {})", start + 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(f: &str) -> Vec<(String, f64)> {
        let t = ElementTable::get();
        parse(f).map(|c| c.amounts.iter().map(|&(z, n)| (t.symbol(z).to_string(), n)).collect()).unwrap_or_default()
    }

    #[test]
    fn groups_and_fractions() {
        let a = amounts("Li1.4Al0.4Ti1.6 (PO4)3");
        assert_eq!(a.len(), 5);
        assert!(a.contains(&("O".into(), 12.0)) && a.contains(&("P".into(), 3.0)));
        let a = amounts("Li0.6[Li0.2Sn0.8S2]");
        assert!((a[0].1 - 0.8).abs() < 1e-12);
        let a = amounts("Li3(Mo8S8O8(OH)8(HWO5(H2O)))*(H2O)18");
        let h = a.iter().find(|x| x.0 == "H").map(|x| x.1);
        assert_eq!(h, Some(8.0 + 1.0 + 2.0 + 36.0));
        assert_eq!(amounts("CuSO4·5H2O").iter().find(|x| x.0 == "O").map(|x| x.1), Some(9.0));
    }

    #[test]
    fn errors() {
        assert!(parse("Li2Xx").is_err_and(|e| e.why.contains("unknown element 'Xx'")));
        assert!(parse("Li2(O").is_err_and(|e| e.why.contains("expected ')'")));
        assert!(parse("Li2O)").is_err());
        assert!(parse("li2o").is_err());
        assert!(parse("").is_err());
        assert!(parse("Li1.2.3O").is_err());
    }
}
