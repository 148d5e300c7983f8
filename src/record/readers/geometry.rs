//! Where the frames are in a dataset's shape: which axes count frames, which are held at one index,
//! and which two are the image's rows and columns.

use hdf5::{Hyperslab, Selection, SliceOrIndex};

use crate::limits;

/// Where the frames are in a dataset's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub shape: Vec<usize>,
    /// Axes that count frames, outermost first; several are flattened in C order.
    pub frame_axes: Vec<usize>,
    /// Axes held at one index (the channel axis of a 4-D DECTRIS dataset).
    pub fixed: Vec<(usize, usize)>,
    pub y_axis: usize,
    pub x_axis: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

impl Geometry {
    /// The usual rule: 2-D is one frame; 3-D has its frames along `frame_axis` (default 0); N-D
    /// with N > 3 has its leading N−2 axes flattened into frames. Returns notes for the output.
    pub fn standard(shape: &[usize], frame_axis: Option<usize>) -> Result<(Self, Vec<String>), String> {
        let rank = shape.len();
        let mut notes = Vec::new();
        let frame_axes = match (rank, frame_axis) {
            (0 | 1, _) => {
                return Err(format!("dataset is {rank}-D (shape {shape:?}); frames need a 2-D or higher dataset"));
            }
            (2, axis) => {
                if let Some(a) = axis {
                    notes.push(format!("frame axis {a} ignored: a 2-D dataset is one frame"));
                }
                vec![]
            }
            (3, axis) => {
                let a = axis.unwrap_or(0);
                if a >= 3 {
                    return Err(format!("frame axis {a} is out of range for a 3-D dataset (0, 1 or 2)"));
                }
                vec![a]
            }
            (_, None | Some(0)) => {
                let lead: Vec<usize> = (0..rank - 2).collect();
                notes.push(format!(
                    "{rank}-D dataset {shape:?}: its leading {} axes are flattened into {} frames of {}×{} (last axis fastest)",
                    rank - 2,
                    shape[..rank - 2].iter().product::<usize>(),
                    shape[rank - 1],
                    shape[rank - 2],
                ));
                lead
            }
            (_, Some(a)) => {
                return Err(format!(
                    "frame axis {a} applies to 3-D datasets only; a {rank}-D dataset's leading {} axes are its frames",
                    rank - 2
                ));
            }
        };
        Ok((Self::with_axes(shape, frame_axes, vec![])?, notes))
    }

    /// Frames along `frame_axes`, `fixed` axes held at one index; the two axes left are rows and
    /// columns. Checks the frame fits the pixel limit.
    pub fn with_axes(shape: &[usize], frame_axes: Vec<usize>, fixed: Vec<(usize, usize)>) -> Result<Self, String> {
        let rest: Vec<usize> =
            (0..shape.len()).filter(|a| !frame_axes.contains(a) && !fixed.iter().any(|(f, _)| f == a)).collect();
        let [y_axis, x_axis] = rest[..] else {
            return Err(format!("shape {shape:?} does not leave two image axes"));
        };
        if let Some((axis, index)) = fixed.iter().find(|(a, i)| *i >= shape.get(*a).copied().unwrap_or(0)) {
            return Err(format!("index {index} is out of range on axis {axis} of shape {shape:?}"));
        }
        let (height, width) = (shape[y_axis], shape[x_axis]);
        if height == 0 || width == 0 {
            return Err(format!("empty frames ({width}×{height} px) in shape {shape:?}"));
        }
        if height.checked_mul(width).is_none_or(|n| n > limits::MAX_FRAME_PIXELS) {
            return Err(format!(
                "frames of {width}×{height} px exceed the limit of {} pixels",
                limits::MAX_FRAME_PIXELS
            ));
        }
        let frames = frame_axes
            .iter()
            .try_fold(1usize, |n, &a| n.checked_mul(shape[a]))
            .ok_or_else(|| format!("shape {shape:?} holds more frames than can be counted"))?;
        if frames == 0 {
            return Err(format!("no frames (shape {shape:?})"));
        }
        Ok(Self { shape: shape.to_vec(), frame_axes, fixed, y_axis, x_axis, frames, height, width })
    }

    /// Two frame axes (a 4-D dataset, Rx × Ry scan of Qy × Qx patterns): the scan shape.
    pub fn scan_shape(&self) -> Option<(usize, usize)> {
        match self.frame_axes[..] {
            [r, c] => Some((self.shape[r], self.shape[c])),
            _ => None,
        }
    }

    /// The index of frame `i` (`i < frames`) on every axis (0 on the image axes).
    pub fn index(&self, i: usize) -> Vec<usize> {
        let mut index = vec![0usize; self.shape.len()];
        let mut rest = i;
        for &a in self.frame_axes.iter().rev() {
            index[a] = rest % self.shape[a];
            rest /= self.shape[a];
        }
        for &(a, k) in &self.fixed {
            index[a] = k;
        }
        index
    }

    /// The hyperslab of frame `i` (`i < frames`).
    pub fn selection(&self, i: usize) -> Selection {
        let index = self.index(i);
        let dims: Vec<SliceOrIndex> = (0..self.shape.len())
            .map(|a| {
                if a == self.y_axis || a == self.x_axis {
                    SliceOrIndex::SliceCount { start: 0, step: 1, count: self.shape[a], block: 1 }
                } else {
                    SliceOrIndex::Index(index[a])
                }
            })
            .collect();
        Hyperslab::from(dims).into()
    }
}
