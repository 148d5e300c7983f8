//! Named structure families of Li conductors, recognised from the formula (and the space group where
//! known) so the map can highlight them. Rules, tried in this order (amounts after normalising the
//! formula as stated):
//!
//! - garnet (LLZO-type): O present, no S/P; per O₁₂: Li 3–7.8, A-site (La, rare earths, Y, Ca, Sr,
//!   Ba, K) 2.4–3.3, B-site (Zr, Hf, Ta, Nb, Sb, Te, Bi, Sn, W, Mo, In, Y, Sc, Ga, Fe, Al) 1.5–2.8.
//!   (The space group is not required: OBELiX's garnets come in Ia-3d, I4₁/acd, I2₁3 and I-43d.)
//! - NASICON: per (P + Si + As + Mo + W + S)₃ with O 11–12.5: Li ≤ 4.2, M (Ti, Ge, Zr, Hf, Sn, Al,
//!   Ga, Sc, Cr, Fe, In, Y, Nb, Ta, V, Ca, Mg, Zn, Yb, Lu, Tm, Er) 1.5–2.5.
//! - argyrodite: P, As, Sb, Si or Ge with S or Se and a halogen (Cl, Br, I) or space group F-43m;
//!   per (P + As + Sb + Si + Ge)₁: Li 4.5–7.5, chalcogen 3.8–6.
//! - LGPS: S, P and Ge/Si/Sn; per S₁₂: Li 9–11, P 1.5–2.6, Ge+Si+Sn 0.5–1.5; or any Li–P–S
//!   compound in LGPS's space group P4₂/nmc.
//! - thio-LISICON: S or Se without O; per S₄: Li 2.5–4.5, P + Ge + Si + Sn + As + Sb + Al + Ga 0.8–1.2.
//! - LISICON: O, no S; per O₄: Li 2.5–4.5, Si + Ge + P + V + As + Zn + Al + Ga + Ti 0.8–1.3.
//! - perovskite (LLTO-type): O; per B-site (Ti, Nb, Ta, Zr, Sn, Mo, W, Fe, Al, Mg, Hf, Ga)₁: O 2.7–3.2,
//!   A-site (Li, La, rare earths, Sr, Ba, Ca, Na, K, Ag) 0.3–1.05 with Li ≤ 0.6.
//! - other: everything else.

use super::formula::Composition;

pub const FAMILIES: [&str; 8] = ["garnet", "NASICON", "argyrodite", "LGPS", "thio-LISICON", "LISICON", "perovskite", "other"];

const RARE_EARTHS: [&str; 15] = ["La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu"];

fn sum(c: &Composition, els: &[&str]) -> f64 {
    els.iter().map(|e| c.amount_of(e)).sum()
}

fn within(v: f64, lo: f64, hi: f64) -> bool {
    (lo..=hi).contains(&v)
}

fn sg_is(sg: Option<&str>, names: &[&str]) -> Option<bool> {
    let g = sg?.replace([' ', '_'], "");
    Some(names.iter().any(|n| n.replace([' ', '_'], "").eq_ignore_ascii_case(&g)))
}

/// The family of a compound (one of `FAMILIES`).
pub fn classify(c: &Composition, space_group: Option<&str>) -> &'static str {
    let a = |e: &str| c.amount_of(e);
    let o = a("O");
    let s = a("S");
    let se = a("Se");
    let halogen = sum(c, &["Cl", "Br", "I"]);
    let mut a_site: Vec<&str> = RARE_EARTHS.to_vec();
    a_site.extend(["Y", "Ca", "Sr", "Ba", "K"]);
    let b_site = ["Zr", "Hf", "Ta", "Nb", "Sb", "Te", "Bi", "Sn", "W", "Mo", "In", "Sc", "Ga", "Fe", "Al"];

    if o > 0.0 && s == 0.0 && a("P") == 0.0 {
        let k = 12.0 / o;
        let garnet = within(a("Li") * k, 3.0, 7.8)
            && within(sum(c, &a_site) * k, 2.4, 3.3)
            && within(sum(c, &b_site) * k, 1.5, 2.8);
        if garnet {
            return "garnet";
        }
    }
    let tet = sum(c, &["P", "Si", "As", "Mo", "W", "S"]);
    if o > 0.0 && tet > 0.0 {
        let k = 3.0 / tet;
        let m = sum(c, &["Ti", "Ge", "Zr", "Hf", "Sn", "Al", "Ga", "Sc", "Cr", "Fe", "In", "Y", "Nb", "Ta", "V", "Ca", "Mg", "Zn", "Yb", "Lu", "Tm", "Er"]);
        if within(o * k, 11.0, 12.5) && a("Li") * k <= 4.2 && within(m * k, 1.5, 2.5) {
            return "NASICON";
        }
    }
    let pn = sum(c, &["P", "As", "Sb", "Si", "Ge"]);
    let chalc = s + se;
    if pn > 0.0 && chalc > 0.0 && (halogen > 0.0 || sg_is(space_group, &["F-43m"]).unwrap_or(false)) {
        let k = 1.0 / pn;
        if within(a("Li") * k, 4.5, 7.5) && within(chalc * k, 3.8, 6.0) {
            return "argyrodite";
        }
    }
    if s > 0.0 && a("P") > 0.0 {
        let k = 12.0 / s;
        let lgps = within(a("Li") * k, 9.0, 11.0) && within(a("P") * k, 1.5, 2.6) && within(sum(c, &["Ge", "Si", "Sn"]) * k, 0.5, 1.5);
        if lgps || (a("Li") > 0.0 && sg_is(space_group, &["P4_2/nmc", "P42/nmc"]).unwrap_or(false)) {
            return "LGPS";
        }
    }
    if chalc > 0.0 && o == 0.0 {
        let k = 4.0 / chalc;
        if within(a("Li") * k, 2.5, 4.5) && within(sum(c, &["P", "Ge", "Si", "Sn", "As", "Sb", "Al", "Ga"]) * k, 0.8, 1.2) && halogen == 0.0 {
            return "thio-LISICON";
        }
    }
    if o > 0.0 && s == 0.0 {
        let k = 4.0 / o;
        if within(a("Li") * k, 2.5, 4.5) && within(sum(c, &["Si", "Ge", "P", "V", "As", "Zn", "Al", "Ga", "Ti"]) * k, 0.8, 1.3) {
            return "LISICON";
        }
        let b = sum(c, &["Ti", "Nb", "Ta", "Zr", "Sn", "Mo", "W", "Fe", "Al", "Mg", "Hf", "Ga"]);
        if b > 0.0 {
            let k = 1.0 / b;
            let mut asite: Vec<&str> = RARE_EARTHS.to_vec();
            asite.extend(["Li", "Sr", "Ba", "Ca", "Na", "K", "Ag"]);
            if within(o * k, 2.7, 3.2) && within(sum(c, &asite) * k, 0.3, 1.05) && a("Li") * k <= 0.6 {
                return "perovskite";
            }
        }
    }
    "other"
}

/// OBELiX's `Family` column mapped onto `FAMILIES` (for checking the rules against it).
pub fn from_obelix_label(label: &str) -> &'static str {
    match label.trim().to_ascii_lowercase().as_str() {
        "garnet" => "garnet",
        "nasicon" => "NASICON",
        "argyrodites" | "argyrodite" => "argyrodite",
        "lgps" => "LGPS",
        "thio-lisicon" => "thio-LISICON",
        "lisicon" => "LISICON",
        "perovskites" | "perovskite" => "perovskite",
        _ => "other",
    }
}
