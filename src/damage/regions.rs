//! Connected regions of damaged patches (4-connected), so that one noisy patch is not "an area".

/// Sizes (in patches) of the 4-connected components of `mask` (`rows × cols`, row-major), largest first.
pub fn component_sizes(mask: &[bool], rows: usize, cols: usize) -> Vec<usize> {
    let mut label = vec![false; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let mut size = 0;
        while let Some(i) = stack.pop() {
            size += 1;
            let (r, c) = (i / cols, i % cols);
            let neighbours = [
                (r > 0).then(|| i - cols),
                (r + 1 < rows).then(|| i + cols),
                (c > 0).then(|| i - 1),
                (c + 1 < cols).then(|| i + 1),
            ];
            for j in neighbours.into_iter().flatten() {
                if mask[j] && !label[j] {
                    label[j] = true;
                    stack.push(j);
                }
            }
        }
        sizes.push(size);
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_4_connected_components() {
        // 1 1 0 1
        // 0 1 0 0
        // 1 0 0 1   (diagonal neighbours are not connected)
        let m = [true, true, false, true, false, true, false, false, true, false, false, true];
        assert_eq!(super::component_sizes(&m, 3, 4), vec![3, 1, 1, 1]);
        assert!(super::component_sizes(&[false; 4], 2, 2).is_empty());
    }
}
