//! CIF → unit cell: a small, strict reader for the subset crystal structures need — cell lengths
//! and angles, the symmetry operations (`_symmetry_equiv_pos_as_xyz` or
//! `_space_group_symop_operation_xyz`) and the `_atom_site_` loop (fractional coordinates, type
//! symbol or label, occupancy) — expanded by the operations into every atom of the cell.
//!
//! No crate on crates.io does this well enough to depend on (the one CIF crate is a young
//! single-author project pulling in a parser generator and a linear-algebra stack), and CIF 1.1's
//! syntax for this subset is small. Errors name the file and the line.

use super::elements::ElementTable;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[must_use]
#[error("{}: {why}", if *line > 0 { format!("{file}:{line}") } else { file.clone() })]
pub struct CifError {
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole (something missing).
    pub line: usize,
    pub why: String,
}

/// One symmetry operation x' = R·x + t on fractional coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SymOp {
    pub rot: [[f64; 3]; 3],
    pub trans: [f64; 3],
}

impl SymOp {
    pub fn apply(&self, f: [f64; 3]) -> [f64; 3] {
        let mut out = [0.0; 3];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.rot[i][0] * f[0] + self.rot[i][1] * f[1] + self.rot[i][2] * f[2] + self.trans[i];
        }
        out
    }
}

/// An atom of the expanded cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Atom {
    pub z: usize,
    /// Fractional coordinates in [0, 1).
    pub frac: [f64; 3],
    pub occupancy: f64,
    /// The `_atom_site_label` of the site it came from.
    pub site: String,
}

#[derive(Debug, Clone)]
pub struct UnitCell {
    pub lengths_a: [f64; 3],
    pub angles_deg: [f64; 3],
    /// Rows: the a, b, c lattice vectors in Å (a along x, b in the xy plane).
    pub lattice_a: [[f64; 3]; 3],
    pub space_group: Option<String>,
    pub ops: Vec<SymOp>,
    pub atoms: Vec<Atom>,
    /// Sites whose expansion disagrees with their stated `_atom_site_symmetry_multiplicity`.
    pub multiplicity_mismatches: Vec<String>,
}

impl UnitCell {
    pub fn volume_a3(&self) -> f64 {
        let [a, b, c] = self.lattice_a;
        dot(a, cross(b, c)).abs()
    }

    pub fn cartesian(&self, f: [f64; 3]) -> [f64; 3] {
        let l = &self.lattice_a;
        [0, 1, 2].map(|k| f[0] * l[0][k] + f[1] * l[1][k] + f[2] * l[2][k])
    }

    /// Σ occupancy per element over the cell.
    pub fn composition(&self) -> Vec<(usize, f64)> {
        let mut out: Vec<(usize, f64)> = Vec::new();
        for a in &self.atoms {
            match out.iter_mut().find(|e| e.0 == a.z) {
                Some(e) => e.1 += a.occupancy,
                None => out.push((a.z, a.occupancy)),
            }
        }
        out.sort_by_key(|e| e.0);
        out
    }
}

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// Lattice vectors from cell parameters (Å, degrees).
pub fn lattice(lengths: [f64; 3], angles_deg: [f64; 3]) -> Option<[[f64; 3]; 3]> {
    let [a, b, c] = lengths;
    let [al, be, ga] = angles_deg.map(f64::to_radians);
    let (ca, cb, cg, sg) = (al.cos(), be.cos(), ga.cos(), ga.sin());
    if sg.abs() < 1e-8 {
        return None;
    }
    let cx = c * cb;
    let cy = c * (ca - cb * cg) / sg;
    let cz2 = c * c - cx * cx - cy * cy;
    if cz2 <= 0.0 {
        return None;
    }
    Some([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, cz2.sqrt()]])
}

/// A value token with the line it was on.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
    quoted: bool,
}

/// Splits CIF text into tokens: whitespace-separated words, quoted strings, `;` text fields;
/// comments dropped.
fn tokenize(text: &str, file: &str) -> Result<Vec<Token>, CifError> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let lineno = i + 1;
        if let Some(rest) = line.strip_prefix(';') {
            let mut field = rest.to_string();
            i += 1;
            loop {
                let Some(l) = lines.get(i) else {
                    return Err(CifError { file: file.into(), line: lineno, why: "text field (;) never closed".into() });
                };
                i += 1;
                if l.starts_with(';') {
                    break;
                }
                field.push('\n');
                field.push_str(l);
            }
            out.push(Token { text: field, line: lineno, quoted: true });
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            if c.is_whitespace() {
                k += 1;
            } else if c == '#' {
                break;
            } else if c == '\'' || c == '"' {
                // A quote closes only when followed by whitespace or the line end (CIF 1.1).
                let mut j = k + 1;
                while j < chars.len() && !(chars[j] == c && chars.get(j + 1).is_none_or(|n| n.is_whitespace())) {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(CifError { file: file.into(), line: lineno, why: format!("unclosed quote {c}") });
                }
                out.push(Token { text: chars[k + 1..j].iter().collect(), line: lineno, quoted: true });
                k = j + 1;
            } else {
                let start = k;
                while k < chars.len() && !chars[k].is_whitespace() {
                    k += 1;
                }
                out.push(Token { text: chars[start..k].iter().collect(), line: lineno, quoted: false });
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Loop {
    tags: Vec<String>,
    rows: Vec<Vec<Token>>,
}

struct Block {
    items: Vec<(String, Token)>,
    loops: Vec<Loop>,
}

fn is_tag(t: &Token) -> bool {
    !t.quoted && t.text.starts_with('_')
}

fn is_keyword(t: &Token) -> bool {
    if t.quoted {
        return false;
    }
    let l = t.text.to_ascii_lowercase();
    l == "loop_" || l.starts_with("data_") || l.starts_with("save_") || l == "global_" || l == "stop_"
}

/// The first data block's items and loops.
fn parse_block(tokens: &[Token], file: &str) -> Result<Block, CifError> {
    let err = |line, why: String| CifError { file: file.into(), line, why };
    let start = tokens
        .iter()
        .position(|t| !t.quoted && t.text.to_ascii_lowercase().starts_with("data_"))
        .ok_or_else(|| err(0, "no data_ block (not a CIF file?)".into()))?;
    let mut block = Block { items: Vec::new(), loops: Vec::new() };
    let mut i = start + 1;
    while i < tokens.len() {
        let t = &tokens[i];
        if !t.quoted && t.text.to_ascii_lowercase().starts_with("data_") {
            break; // only the first block
        }
        if !t.quoted && t.text.eq_ignore_ascii_case("loop_") {
            i += 1;
            let mut tags = Vec::new();
            while i < tokens.len() && is_tag(&tokens[i]) {
                tags.push(tokens[i].text.to_ascii_lowercase());
                i += 1;
            }
            if tags.is_empty() {
                return Err(err(t.line, "loop_ without tags".into()));
            }
            let mut values = Vec::new();
            while i < tokens.len() && !is_tag(&tokens[i]) && !is_keyword(&tokens[i]) {
                values.push(tokens[i].clone());
                i += 1;
            }
            if values.len() % tags.len() != 0 {
                return Err(err(
                    t.line,
                    format!("loop_ of {} tags has {} values, not a multiple", tags.len(), values.len()),
                ));
            }
            let rows = values.chunks(tags.len()).map(|c| c.to_vec()).collect();
            block.loops.push(Loop { tags, rows });
        } else if is_tag(t) {
            let v = tokens.get(i + 1).filter(|v| !is_tag(v) && !is_keyword(v));
            let Some(v) = v else {
                return Err(err(t.line, format!("{} has no value", t.text)));
            };
            block.items.push((t.text.to_ascii_lowercase(), v.clone()));
            i += 2;
        } else if is_keyword(t) {
            i += 1; // save frames and global_ do not occur in structure files; skip the word
        } else {
            return Err(err(t.line, format!("value '{}' without a tag", t.text)));
        }
    }
    Ok(block)
}

/// A CIF number: `1.234(5)` → 1.234 (the standard uncertainty dropped).
fn number(t: &Token, file: &str, tag: &str) -> Result<f64, CifError> {
    let s = t.text.split('(').next().unwrap_or("");
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| CifError { file: file.into(), line: t.line, why: format!("{tag}: '{}' is not a number", t.text) })
}

/// One operation such as `-x+1/2, y, z+3/4` or `x-y, x, z+1/3`.
pub fn parse_symop(s: &str) -> Result<SymOp, String> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() != 3 {
        return Err(format!("symmetry operation '{s}' does not have 3 components"));
    }
    let mut op = SymOp { rot: [[0.0; 3]; 3], trans: [0.0; 3] };
    for (row, part) in parts.iter().enumerate() {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
        if p.is_empty() {
            return Err(format!("symmetry operation '{s}': empty component"));
        }
        let chars: Vec<char> = p.chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let mut sign = 1.0;
            if chars[k] == '+' || chars[k] == '-' {
                if chars[k] == '-' {
                    sign = -1.0;
                }
                k += 1;
            }
            let start = k;
            while k < chars.len() && (chars[k].is_ascii_digit() || chars[k] == '.' || chars[k] == '/') {
                k += 1;
            }
            let num = if k > start {
                let t: String = chars[start..k].iter().collect();
                Some(fraction(&t).ok_or(format!("symmetry operation '{s}': bad number '{t}'"))?)
            } else {
                None
            };
            if k < chars.len() && chars[k] == '*' {
                k += 1;
            }
            match chars.get(k) {
                Some(&c @ ('x' | 'y' | 'z')) => {
                    op.rot[row][(c as u8 - b'x') as usize] += sign * num.unwrap_or(1.0);
                    k += 1;
                }
                None | Some('+') | Some('-') => match num {
                    Some(v) => op.trans[row] += sign * v,
                    None => return Err(format!("symmetry operation '{s}': dangling sign")),
                },
                Some(c) => return Err(format!("symmetry operation '{s}': unexpected '{c}'")),
            }
        }
    }
    Ok(op)
}

fn fraction(t: &str) -> Option<f64> {
    match t.split_once('/') {
        Some((a, b)) => {
            let (a, b) = (a.parse::<f64>().ok()?, b.parse::<f64>().ok()?);
            (b != 0.0).then_some(a / b)
        }
        None => t.parse().ok(),
    }
}

/// Element symbol from a type symbol or label: `Li1+` → Li, `O2-` → O, `Zr4` → Zr.
fn element_of(s: &str) -> Option<usize> {
    let letters: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let t = ElementTable::get();
    let mut chars = letters.chars();
    let first = chars.next()?.to_ascii_uppercase();
    let second = chars.next().map(|c| c.to_ascii_lowercase());
    if let Some(c2) = second {
        let two: String = [first, c2].iter().collect();
        if let Some(e) = t.by_symbol(&two) {
            return Some(e.z);
        }
    }
    t.by_symbol(&first.to_string()).map(|e| e.z)
}

/// Distance below which two images of a site are the same position (Å).
const SAME_POSITION_A: f64 = 0.01;

pub fn parse(text: &str, file: &str) -> Result<UnitCell, CifError> {
    let err = |line, why: String| CifError { file: file.into(), line, why };
    let tokens = tokenize(text, file)?;
    let block = parse_block(&tokens, file)?;
    let item = |tag: &str| block.items.iter().find(|(k, _)| k == tag).map(|(_, v)| v);
    let mut lengths = [0.0; 3];
    let mut angles = [90.0; 3];
    for (k, tag) in ["_cell_length_a", "_cell_length_b", "_cell_length_c"].iter().enumerate() {
        let t = item(tag).ok_or_else(|| err(0, format!("no {tag}")))?;
        lengths[k] = number(t, file, tag)?;
        if lengths[k] <= 0.0 {
            return Err(err(t.line, format!("{tag} must be > 0")));
        }
    }
    for (k, tag) in ["_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"].iter().enumerate() {
        let t = item(tag).ok_or_else(|| err(0, format!("no {tag}")))?;
        angles[k] = number(t, file, tag)?;
    }
    let lattice_a = lattice(lengths, angles).ok_or_else(|| err(0, "cell parameters do not form a cell".into()))?;
    let space_group = ["_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt"]
        .iter()
        .find_map(|t| item(t))
        .map(|t| t.text.trim().to_string());

    let op_tags = ["_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz"];
    let op_loop = block.loops.iter().find_map(|l| {
        op_tags.iter().find_map(|t| l.tags.iter().position(|x| x == t)).map(|c| (l, c))
    });
    let ops: Vec<SymOp> = match op_loop {
        Some((l, c)) => l.rows.iter().map(|r| parse_symop(&r[c].text).map_err(|e| err(r[c].line, e))).collect::<Result<_, _>>()?,
        None => {
            let p1 = space_group.as_deref().is_none_or(|g| g.replace(' ', "").eq_ignore_ascii_case("P1"));
            if !p1 {
                return Err(err(
                    0,
                    format!(
                        "no symmetry operations (_symmetry_equiv_pos_as_xyz) for space group '{}'; operations are not generated from the symbol",
                        space_group.as_deref().unwrap_or("")
                    ),
                ));
            }
            vec![SymOp { rot: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], trans: [0.0; 3] }]
        }
    };
    if ops.is_empty() {
        return Err(err(0, "empty symmetry operation loop".into()));
    }

    let site_loop = block
        .loops
        .iter()
        .find(|l| l.tags.iter().any(|t| t == "_atom_site_fract_x"))
        .ok_or_else(|| err(0, "no _atom_site_ loop with _atom_site_fract_x".into()))?;
    let col = |t: &str| site_loop.tags.iter().position(|x| x == t);
    let (cx, cy, cz) = match (col("_atom_site_fract_x"), col("_atom_site_fract_y"), col("_atom_site_fract_z")) {
        (Some(x), Some(y), Some(z)) => (x, y, z),
        _ => return Err(err(0, "the _atom_site_ loop lacks fract_y or fract_z".into())),
    };
    let c_type = col("_atom_site_type_symbol");
    let c_label = col("_atom_site_label");
    if c_type.is_none() && c_label.is_none() {
        return Err(err(0, "the _atom_site_ loop has neither _atom_site_type_symbol nor _atom_site_label".into()));
    }
    let c_occ = col("_atom_site_occupancy");
    let c_mult = col("_atom_site_symmetry_multiplicity");

    let mut atoms = Vec::new();
    let mut mismatches = Vec::new();
    for (n, row) in site_loop.rows.iter().enumerate() {
        let line = row[cx].line;
        let symbol_tok = c_type.or(c_label).map(|c| &row[c]);
        let symbol = symbol_tok.map(|t| t.text.as_str()).unwrap_or("");
        let z = element_of(symbol).ok_or_else(|| err(line, format!("unknown element in atom site '{symbol}'")))?;
        let label = c_label.map_or_else(|| format!("site{}", n + 1), |c| row[c].text.clone());
        let f = [number(&row[cx], file, "_atom_site_fract_x")?, number(&row[cy], file, "_atom_site_fract_y")?, number(&row[cz], file, "_atom_site_fract_z")?];
        let occupancy = match c_occ.map(|c| &row[c]) {
            Some(t) if t.text == "." || t.text == "?" => 1.0,
            Some(t) => number(t, file, "_atom_site_occupancy")?,
            None => 1.0,
        };
        if !(occupancy > 0.0 && occupancy <= 1.0 + 1e-6) {
            return Err(err(line, format!("site {label}: occupancy {occupancy} outside (0, 1]")));
        }
        let images = expand(f, &ops, &lattice_a);
        if let Some(m) = c_mult.and_then(|c| row[c].text.parse::<usize>().ok()).filter(|&m| m != images.len()) {
            mismatches.push(format!("{label}: {} positions, multiplicity says {m}", images.len()));
        }
        atoms.extend(images.into_iter().map(|frac| Atom { z, frac, occupancy: occupancy.min(1.0), site: label.clone() }));
    }
    if atoms.is_empty() {
        return Err(err(0, "no atoms".into()));
    }
    if !mismatches.is_empty() {
        tracing::warn!("{file}: symmetry expansion disagrees with the stated multiplicity: {}", mismatches.join("; "));
    }
    Ok(UnitCell { lengths_a: lengths, angles_deg: angles, lattice_a, space_group, ops, atoms, multiplicity_mismatches: mismatches })
}

fn wrap(v: f64) -> f64 {
    let w = v - v.floor();
    if w >= 1.0 - 1e-12 { 0.0 } else { w }
}

/// Distinct images of one site under the operations, wrapped into the cell.
fn expand(f: [f64; 3], ops: &[SymOp], lattice: &[[f64; 3]; 3]) -> Vec<[f64; 3]> {
    let mut out: Vec<[f64; 3]> = Vec::new();
    for op in ops {
        let p = op.apply(f).map(wrap);
        let dup = out.iter().any(|q| {
            let d = [0, 1, 2].map(|k| {
                let x = p[k] - q[k];
                x - x.round()
            });
            let c = [0, 1, 2].map(|k| d[0] * lattice[0][k] + d[1] * lattice[1][k] + d[2] * lattice[2][k]);
            dot(c, c).sqrt() < SAME_POSITION_A
        });
        if !dup {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symops() {
        let op = parse_symop("-y+1/4, x-y, z+0.5").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(op.rot, [[0.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!(op.trans, [0.25, 0.0, 0.5]);
        assert_eq!(parse_symop("1/2+x, -Y, z").map(|o| o.trans[0]), Ok(0.5));
        assert!(parse_symop("x, y").is_err());
        assert!(parse_symop("x, y, w").is_err());
    }

    #[test]
    fn lattice_hexagonal() {
        let l = lattice([3.0, 3.0, 5.0], [90.0, 90.0, 120.0]).unwrap_or_else(|| panic!("cell"));
        assert!((l[1][0] + 1.5).abs() < 1e-12 && (l[2][2] - 5.0).abs() < 1e-12);
    }
}
