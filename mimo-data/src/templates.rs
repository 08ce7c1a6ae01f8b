//! Perspective I and II instruction and response templates, verbatim from the MIMO paper's
//! Appendix E.1 (`{}` is replaced by the entity names or their grounded markup), and the
//! grounding markup `<p>label</p><SEG>` of answers.

use mimo_core::rng::Rng;

/// Perspective I instructions (`{}`: the entity names).
pub const P1_INSTRUCTIONS: [&str; 9] = [
    "Please segment the {} in the image.",
    "Can you identify and segment the distinct {} elements within the image?",
    "I need the {} in the image to be categorized into individual segments.",
    "Could you analyze the image and segment the {} into separate segments?",
    "Can you perform an image segmentation to extract the {}?",
    "Segment the {} in the given image for analysis.",
    "Segment and highlight the {} in the image.",
    "Cut out the {} from the image and display it.",
    "Segment the {} regions in the medical image.",
];

/// Perspective I responses for a single-label image (`{}`: grounded entity).
pub const P1_RESPONSES_SINGLE: [&str; 6] = [
    "The image includes {}. The segmentation result is shown in the image.",
    "The segmentation result is displayed in the image, which includes {}.",
    "You can see the segmentation result in the image, along with {}.",
    "The image shows the segmentation result, which includes {}.",
    "The segmentation result in the image includes {}.",
    "Within the image, {} is present, and the segmentation result is visible.",
];

/// Perspective I responses for a multi-label image (`{}`: grounded entities).
pub const P1_RESPONSES_MULTI: [&str; 6] = [
    "The image includes {}. The segmentation results are shown in the image.",
    "The segmentation results are displayed in the image, which include {}.",
    "You can see the segmentation results in the image, along with {}.",
    "The image shows the segmentation results, which include {}.",
    "The segmentation results in the image include {}.",
    "Within the image, {} are present, and the segmentation results are visible.",
];

/// Perspective II instructions for a box prompt.
pub const P2_BOX_INSTRUCTIONS: [&str; 8] = [
    "Please segment out the organs or lesions in the bounding box.",
    "Please identify and segment the organs or lesions within the given bounding box.",
    "Segment the organs or lesions that are located inside the bounding box.",
    "Can you segment out the organs or lesions found in the specified bounding box?",
    "Please perform segmentation of the organs or lesions within this bounding box.",
    "Segment any organs or lesions present within the provided bounding box.",
    "Conduct segmentation of organs or lesions contained in the bounding box.",
    "Could you segment the organs or lesions that are inside the bounding box?",
];

/// Perspective II instructions for a point prompt.
pub const P2_POINT_INSTRUCTIONS: [&str; 8] = [
    "Please segment out the organs or lesions at the specified point.",
    "Please identify and segment the organs or lesions at the given point.",
    "Segment the organs or lesions that are located at the specified point.",
    "Can you segment out the organs or lesions found at the specified point?",
    "Please perform segmentation of the organs or lesions at this point.",
    "Segment any organs or lesions present at the provided point.",
    "Conduct segmentation of organs or lesions at the specified point.",
    "Could you segment the organs or lesions at the specified point?",
];

/// Perspective II responses (the same for box and point prompts).
pub const P2_RESPONSES: [&str; 6] = [
    "The result of segmentation is {} and is shown in the image.",
    "The outcome of the segmentation is {} and is displayed in the image.",
    "The segmentation result is {} and is shown in the image.",
    "The organs or lesions have been segmented and the result is {}.",
    "The segmentation output is {} and is present in the image.",
    "Segmentation results in {}, which is shown in the image.",
];

/// `a`, `a and b`, `a, b and c`.
pub fn join_names(names: &[String]) -> String {
    match names.len() {
        0 => String::new(),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// The grounded form of one entity: `<p>label</p><SEG>`.
pub fn grounded(label: &str) -> String {
    format!("<p>{label}</p><SEG>")
}

/// Grounded entities joined as names are; the i-th `<SEG>` is the i-th label's mask.
pub fn grounded_list(labels: &[String]) -> String {
    join_names(&labels.iter().map(|l| grounded(l)).collect::<Vec<_>>())
}

/// A Perspective I (instruction, answer) for `labels` (mask order).
pub fn p1(labels: &[String], rng: &mut Rng) -> (String, String) {
    let q = rng
        .pick(&P1_INSTRUCTIONS)
        .replace("{}", &join_names(labels));
    let responses: &[&str] = if labels.len() == 1 {
        &P1_RESPONSES_SINGLE
    } else {
        &P1_RESPONSES_MULTI
    };
    let a = rng.pick(responses).replace("{}", &grounded_list(labels));
    (q, a)
}

/// A Perspective II (instruction, answer) for a box (`point == false`) or point prompt.
pub fn p2(labels: &[String], point: bool, rng: &mut Rng) -> (String, String) {
    let qs: &[&str] = if point {
        &P2_POINT_INSTRUCTIONS
    } else {
        &P2_BOX_INSTRUCTIONS
    };
    let q = rng.pick(qs).to_string();
    let a = rng
        .pick(&P2_RESPONSES)
        .replace("{}", &grounded_list(labels));
    (q, a)
}

#[cfg(test)]
mod tests;
