//! The table dialects: both directions from one table, aliases read only, unmatched keys.

use super::*;

const D: PatternDialect = PatternDialect {
    name: "test",
    rules: &[
        ("a.9.x.buffer", ""),
        ("a.*.{x|y}.w", "a.*.{x|y}.base.w"),
        ("peft.**.lora_A.weight", "**.lora_a.weight"),
        ("peft.**.lora_A.*.weight", "**.lora_a.weight"),
    ],
    keep_unmatched: true,
};

#[test]
fn pattern_dialect_derives_both_directions() {
    // File -> module, and back to the same key.
    for (file, module) in [
        ("a.3.x.w", "a.3.x.base.w"),
        ("a.10.y.w", "a.10.y.base.w"),
        (
            "peft.model.layers.0.q_proj.lora_A.weight",
            "model.layers.0.q_proj.lora_a.weight",
        ),
    ] {
        assert_eq!(D.to_module(file).as_deref(), Some(module));
        assert_eq!(D.to_file(module), file);
    }
    // An alias reads; the canonical key is written.
    assert_eq!(
        D.to_module("peft.m.lora_A.default.weight").as_deref(),
        Some("m.lora_a.weight")
    );
    assert_eq!(D.to_file("m.lora_a.weight"), "peft.m.lora_A.weight");
    // No rule: kept (or not the model's without keep_unmatched).
    assert_eq!(D.to_module("a.3.z.w").as_deref(), Some("a.3.z.w"));
    assert_eq!(D.to_module("a.x.w").as_deref(), Some("a.x.w"));
    let strict = PatternDialect {
        keep_unmatched: false,
        ..D
    };
    assert_eq!(strict.to_module("a.3.z.w"), None);
    // A rule without a module side drops the key.
    assert_eq!(D.to_module("a.9.x.buffer"), None);
    // `**` needs at least one segment.
    assert_eq!(strict.to_module("peft.lora_A.weight"), None);
}
