//! Metadata values as writers store them: the same fact is an integer in one file, a float in
//! another, and a fixed- or variable-length string (`"0"`, `"n_m"`) in a third. Everything here
//! answers `None` for "not there or not readable": missing metadata is noted, never fatal.

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Container, IndexType, IterationOrder, LinkType, LocationType};
use hdf5_sys::h5a::H5Aread;
use hdf5_sys::h5d::H5Dread;
use hdf5_sys::h5p::H5P_DEFAULT;
use hdf5_sys::h5s::H5S_ALL;

use crate::record::h5sync;

/// Metadata values are scalars or short vectors; anything bigger is not metadata we want.
const MAX_ELEMENTS: usize = 64;
/// Longest fixed-length string read.
const MAX_STRING: usize = 1 << 16;

/// A number or a text, as found.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Num(f64),
    Text(String),
}

impl Value {
    /// The value as a number: numbers as they are, texts parsed (`"0"`, `" 2.5e-6 "`).
    pub fn number(&self) -> Option<f64> {
        match self {
            Self::Num(v) => Some(*v),
            Self::Text(s) => s.trim().parse().ok(),
        }
    }

    /// The value as text (numbers formatted).
    pub fn text(&self) -> String {
        match self {
            Self::Num(v) => v.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// Attribute `name` of `loc` (file, group or dataset).
pub(super) fn attr(loc: &hdf5::Location, name: &str) -> Option<Value> {
    // Asking the attribute list first keeps HDF5 from building an error stack for every miss.
    if !loc.attr_names().ok()?.iter().any(|n| n == name) {
        return None;
    }
    let a = loc.attr(name).ok()?;
    read(&a, true)
}

/// A small dataset `name` in `group` holding one value (py4DSTEM stores calibration this way).
pub(super) fn scalar_dataset(group: &hdf5::Group, name: &str) -> Option<Value> {
    if !group.link_exists(name) {
        return None;
    }
    let ds = group.dataset(name).ok()?;
    read(&ds, false)
}

/// An attribute or, failing that, a scalar dataset of the same name.
pub(super) fn attr_or_dataset(group: &hdf5::Group, name: &str) -> Option<Value> {
    attr(group, name).or_else(|| scalar_dataset(group, name))
}

fn read(c: &Container, is_attr: bool) -> Option<Value> {
    let n = c.size();
    if n == 0 || n > MAX_ELEMENTS {
        return None;
    }
    match c.dtype().ok()?.to_descriptor().ok()? {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Float(_) => {
            c.read_raw::<f64>().ok()?.first().copied().map(Value::Num)
        }
        TypeDescriptor::VarLenUnicode => c.read_raw::<VarLenUnicode>().ok()?.first().map(|s| text(s.as_str())),
        TypeDescriptor::VarLenAscii => c.read_raw::<VarLenAscii>().ok()?.first().map(|s| text(s.as_str())),
        TypeDescriptor::FixedAscii(len) | TypeDescriptor::FixedUnicode(len) => fixed_string(c, is_attr, len),
        _ => None,
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned())
}

/// The first element of a fixed-length string attribute or dataset. The hdf5 crate reads fixed
/// strings only with a compile-time length, so this reads the raw bytes with the object's own type.
fn fixed_string(c: &Container, is_attr: bool, len: usize) -> Option<Value> {
    let total = len.checked_mul(c.size())?;
    if len == 0 || total > MAX_STRING {
        return None;
    }
    let dtype = c.dtype().ok()?;
    let mut buf = vec![0u8; total];
    let rc = h5sync(|| {
        // SAFETY: `buf` holds `size × len` bytes, exactly what reading every element with the
        // object's own fixed-length string type writes; both ids are open for this call.
        unsafe {
            if is_attr {
                H5Aread(c.id(), dtype.id(), buf.as_mut_ptr().cast())
            } else {
                H5Dread(c.id(), dtype.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.as_mut_ptr().cast())
            }
        }
    });
    if rc < 0 {
        return None;
    }
    let first = &buf[..len];
    let end = first.iter().position(|&b| b == 0).unwrap_or(len);
    Some(text(&String::from_utf8_lossy(&first[..end])))
}

/// A length in `units` → ångström; `None` for units that are not lengths (pixels, `[]`, 1/Å) or
/// values that are not positive and finite. Accepts the spellings files use: `n_m`, `nm`, `[n_m]`,
/// `Å`, `A`, `m`, `µm`, `pm`.
pub(super) fn length_to_angstrom(value: f64, units: &str) -> Option<f64> {
    let u: String = units.trim().trim_matches(['[', ']']).chars().filter(|&c| c != '_').collect();
    let factor = match u.to_lowercase().as_str() {
        "m" => 1e10,
        "mm" => 1e7,
        "um" | "µm" | "μm" => 1e4,
        "nm" => 10.0,
        "a" | "å" | "ang" | "angstrom" => 1.0,
        "pm" => 0.01,
        _ => return None,
    };
    positive(value * factor)
}

/// `Some(v)` for a positive finite `v`: a zero or negative dose input means "not measured".
pub(super) fn positive(v: f64) -> Option<f64> {
    (v.is_finite() && v > 0.0).then_some(v)
}

/// Groups below `root` (itself included, depth first in name order) for which `pick` is true,
/// with their paths. Only hard links are followed, so external files are never opened and a
/// linked-back group cannot loop; depth and count are capped against hostile files.
pub(super) fn find_groups(
    root: &hdf5::Group,
    root_path: &str,
    pick: &dyn Fn(&hdf5::Group) -> bool,
) -> Vec<(String, hdf5::Group)> {
    const MAX_DEPTH: usize = 8;
    const MAX_GROUPS: usize = 10_000;
    let mut found = Vec::new();
    let mut stack = vec![(root_path.to_owned(), root.clone(), 0usize)];
    let mut visited = 0;
    while let Some((path, group, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_GROUPS {
            break;
        }
        if pick(&group) {
            found.push((path.clone(), group.clone()));
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(links) = group.links(IndexType::Name, IterationOrder::Increasing) else { continue };
        // Reversed onto the stack so the first name is visited first.
        for (name, info) in links.into_iter().rev() {
            if info.link_type != LinkType::Hard || group.loc_type_by_name(&name).ok() != Some(LocationType::Group) {
                continue;
            }
            if let Ok(child) = group.group(&name) {
                let child_path = if path.ends_with('/') { format!("{path}{name}") } else { format!("{path}/{name}") };
                stack.push((child_path, child, depth + 1));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_in_the_spellings_files_use() {
        assert_eq!(length_to_angstrom(0.5, "n_m"), Some(5.0));
        assert_eq!(length_to_angstrom(0.5, "[n_m]"), Some(5.0));
        assert_eq!(length_to_angstrom(2.0, "Å"), Some(2.0));
        assert_eq!(length_to_angstrom(2.0, "A"), Some(2.0));
        assert!((length_to_angstrom(8.17e-12, "m").unwrap_or(0.0) - 0.0817).abs() < 1e-12);
        assert_eq!(length_to_angstrom(1.0, "[]"), None);
        assert_eq!(length_to_angstrom(1.0, "pixels"), None);
        assert_eq!(length_to_angstrom(1.0, "A^-1"), None);
        assert_eq!(length_to_angstrom(0.0, "nm"), None);
    }

    #[test]
    fn values_as_numbers_and_text() {
        assert_eq!(Value::Text(" 0 ".into()).number(), Some(0.0));
        assert_eq!(Value::Num(2.0).number(), Some(2.0));
        assert_eq!(Value::Text("n_m".into()).number(), None);
        assert_eq!(Value::Text("file".into()).text(), "file");
    }
}
