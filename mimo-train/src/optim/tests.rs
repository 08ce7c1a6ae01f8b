use super::*;

#[test]
fn warmup_decay_matches_deepspeed() {
    // DeepSpeed WarmupDecayLR(total 5000, warmup 100, max 3e-4), linear warm-up.
    let s = WarmupDecay {
        peak: 3e-4,
        warmup: 100,
        total: 5000,
        decay: true,
        step: 0,
    };
    assert_eq!(s.lr_at(0), 0.0);
    assert!((s.lr_at(50) - 1.5e-4).abs() < 1e-15);
    assert!((s.lr_at(100) - 3e-4).abs() < 1e-15);
    assert!((s.lr_at(2550) - 1.5e-4).abs() < 1e-15);
    assert_eq!(s.lr_at(5000), 0.0);
    assert_eq!(s.lr_at(6000), 0.0);
    let held = WarmupDecay { decay: false, ..s };
    assert_eq!(held.lr_at(4000), 3e-4);
    let none = WarmupDecay { warmup: 0, ..s };
    assert_eq!(none.lr_at(0), 3e-4);
}
