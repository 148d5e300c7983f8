//! Area under the ROC curve of a per-patch score against true labels: the probability that a
//! damaged patch scores higher than an intact one (ties count half) — the Mann–Whitney U statistic
//! divided by the number of (damaged, intact) pairs.

/// AUC of `positive` against `negative` scores; NaN scores (patches not analysed) are left out.
/// `None` when either side is empty: with no damaged (or no intact) patch the AUC is undefined, and
/// a number would lie.
pub fn auc(positive: &[f32], negative: &[f32]) -> Option<f64> {
    let mut all: Vec<(f32, bool)> = positive
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| (v, true))
        .chain(negative.iter().filter(|v| !v.is_nan()).map(|&v| (v, false)))
        .collect();
    let n_pos = all.iter().filter(|a| a.1).count();
    let n_neg = all.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mid-ranks over runs of equal scores.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += mid_rank * all[i..=j].iter().filter(|a| a.1).count() as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::auc;

    #[test]
    fn hand_example() {
        // Pairs (pos, neg): 0.9 beats 0.1, 0.4, 0.8 → 3; 0.8 ties 0.8 → ½, beats 0.1, 0.4 → 2;
        // 0.3 beats 0.1 → 1. U = 6.5 of 3 × 3 = 9 pairs.
        let a = auc(&[0.9, 0.8, 0.3], &[0.1, 0.4, 0.8]).expect("defined");
        assert!((a - 6.5 / 9.0).abs() < 1e-12, "{a}");
    }

    #[test]
    fn perfect_inverted_and_chance() {
        assert_eq!(auc(&[2.0, 3.0], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[0.0, 1.0], &[2.0, 3.0]), Some(0.0));
        assert_eq!(auc(&[1.0, 1.0], &[1.0]), Some(0.5));
    }

    #[test]
    fn undefined_without_one_class_and_nan_is_left_out() {
        assert_eq!(auc(&[], &[0.1, 0.2]), None);
        assert_eq!(auc(&[0.5], &[]), None);
        assert_eq!(auc(&[f32::NAN], &[0.1]), None);
        assert_eq!(auc(&[0.9, f32::NAN], &[0.1, f32::NAN]), Some(1.0));
    }
}
