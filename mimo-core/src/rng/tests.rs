use super::*;

#[test]
fn hash_spreads_similar_keys_over_the_unit_interval() {
    // Keys differing only in their last characters must still split ~80/10/10.
    let u: Vec<f64> = (0..1000)
        .map(|i| (hash64(&format!("42/src/vol{i:04}")) >> 11) as f64 / (1u64 << 53) as f64)
        .collect();
    let below = |t: f64| u.iter().filter(|&&v| v < t).count();
    assert!((700..900).contains(&below(0.8)), "{}", below(0.8));
    assert!((50..150).contains(&below(0.1)), "{}", below(0.1));
}
