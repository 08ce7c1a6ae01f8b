use super::*;
use crate::phantom::{Style, phantom};

#[test]
fn builtin_covers_the_paper_table_and_the_phantoms() {
    let kb = KnowledgeBase::builtin();
    // Labels of the paper's dataset table (Appendix B), as written there.
    for l in [
        "Atrium Blood Cavity",
        "COVID",
        "Duodenum",
        "Edema",
        "Esophagus",
        "Femur Head",
        "Heart Blood Pool",
        "Hip",
        "Intracranial Hemorrhage",
        "Ischemic Stroke",
        "Kidney",
        "Kidney Tumor",
        "Left Atrium",
        "Left Lung",
        "Liver",
        "Lumbar Vertebra",
        "Lung",
        "Lung Cancer",
        "Lung Infections",
        "Lung Nodule",
        "Lung Vessel",
        "Matter Tracts",
        "Multiple Sclerosis Lesion",
        "Myocardium",
        "Optic Cup",
        "Optic Disc",
        "Pancreas",
        "Pneumothorax",
        "Polyp",
        "Prostate",
        "Prostate Cancer",
        "Prostate Zone",
        "Pulmonary Artery",
        "Pulmonary Embolism",
        "Respiratory Tract",
        "Right Lung",
        "Sacrum",
        "Skin Lesion",
        "Spleen",
        "Stomach",
        "Tumor",
        "Ultrasound Nerve",
        "Urinary Bladder",
        "Ventricle",
        "Ventricular Myocardium",
        "Vertebrae",
        "Vestibular Schwannoma",
    ] {
        assert!(kb.get(l).is_some(), "no knowledge for {l}");
    }
    for style in Style::ALL {
        for seed in 0..4 {
            for (label, _) in phantom(style, 32, seed, 0).masks {
                assert!(
                    kb.get(&label).is_some(),
                    "no knowledge for phantom label {label}"
                );
            }
        }
    }
    let e = kb.get("left kidney").unwrap();
    assert_eq!(e.label, "kidney");
    assert!(e.function.is_some() || e.cause.is_some());
}

#[test]
fn user_files_extend_and_override() {
    let dir = std::env::temp_dir().join(format!("mimo-kb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("kb.json");
    std::fs::write(
        &f,
        r#"{"entries": [{"label": "liver", "kind": "organ", "definition": "Custom.", "location": "right", "function": "f", "findings": "x"},
                            {"label": "gallbladder", "aliases": ["gall bladder"], "kind": "organ", "definition": "A sac.", "location": "under the liver", "function": "stores bile", "findings": "stones"}]}"#,
    )
    .unwrap();
    let kb = KnowledgeBase::builtin().with_file(&f).unwrap();
    assert_eq!(kb.get("Liver").unwrap().definition, "Custom.");
    assert_eq!(kb.get("gall bladder").unwrap().label, "gallbladder");
    std::fs::write(&f, "{").unwrap();
    let e = KnowledgeBase::builtin()
        .with_file(&f)
        .unwrap_err()
        .to_string();
    assert!(e.contains("kb.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
