//! Synthetic phantoms: seeded 2D "scans" with named structures (organs and lesions drawn as
//! textured, irregular shapes with noise and varied contrast) and their exact masks, in
//! several modality styles. Used by tests, the quickstart and benchmarks; they are not
//! anatomy, only realistic enough to exercise every code path.

use mimo_core::rng::Rng;
use serde::{Deserialize, Serialize};

/// Modality style of a phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Style {
    /// Abdominal CT slice: liver, spleen, kidneys, aorta, sometimes a liver tumor.
    Ct,
    /// Brain MR slice: brain, sometimes a tumor with edema.
    Mr,
    /// Chest X-ray: lungs and heart.
    Xray,
    /// Ultrasound with speckle: a thyroid nodule.
    Ultrasound,
    /// Endoscopy frame: a polyp.
    Endoscopy,
    /// Fundus photograph: optic disc and cup.
    Fundus,
    /// Dermoscopy: a skin lesion.
    Dermoscopy,
}

impl Style {
    /// Every style.
    pub const ALL: [Style; 7] = [
        Style::Ct,
        Style::Mr,
        Style::Xray,
        Style::Ultrasound,
        Style::Endoscopy,
        Style::Fundus,
        Style::Dermoscopy,
    ];

    /// The modality name written in records.
    pub fn modality(self) -> &'static str {
        match self {
            Style::Ct => "CT",
            Style::Mr => "MR",
            Style::Xray => "X-ray",
            Style::Ultrasound => "ultrasound",
            Style::Endoscopy => "endoscopy",
            Style::Fundus => "fundus",
            Style::Dermoscopy => "dermoscopy",
        }
    }
}

/// A generated phantom.
#[derive(Debug, Clone)]
pub struct Phantom {
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// RGB pixels, row-major.
    pub rgb: Vec<u8>,
    /// Named structures with exact row-major masks (non-empty), in drawing order.
    pub masks: Vec<(String, Vec<bool>)>,
    /// The style.
    pub style: Style,
}

/// An ellipse with a wobbly boundary.
#[derive(Debug, Clone)]
struct Shape {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
    angle: f64,
    wobble: [(f64, f64, f64); 2],
}

impl Shape {
    fn new(cx: f64, cy: f64, rx: f64, ry: f64, irregular: f64, rng: &mut Rng) -> Self {
        let angle = rng.range(-0.4, 0.4);
        let mut w = || {
            (
                irregular * rng.range(0.3, 1.0),
                rng.range(2.0, 6.0).round(),
                rng.range(0.0, 6.3),
            )
        };
        Self {
            cx,
            cy,
            rx,
            ry,
            angle,
            wobble: [w(), w()],
        }
    }

    /// Radial coordinate: < 1 inside.
    fn rho(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (c, s) = (self.angle.cos(), self.angle.sin());
        let (u, v) = ((c * dx + s * dy) / self.rx, (-s * dx + c * dy) / self.ry);
        let theta = v.atan2(u);
        let scale: f64 = 1.0
            + self
                .wobble
                .iter()
                .map(|(a, f, p)| a * (f * theta + p).sin())
                .sum::<f64>();
        (u * u + v * v).sqrt() / scale
    }

    fn mask(&self, h: usize, w: usize) -> Vec<bool> {
        (0..h * w)
            .map(|i| self.rho((i % w) as f64 + 0.5, (i / w) as f64 + 0.5) < 1.0)
            .collect()
    }
}

struct Canvas {
    h: usize,
    w: usize,
    px: Vec<[f64; 3]>,
}

impl Canvas {
    fn new(h: usize, w: usize, c: [f64; 3]) -> Self {
        Self {
            h,
            w,
            px: vec![c; h * w],
        }
    }

    /// Paints `color` where `mask` holds, with a soft edge and a texture.
    fn fill(&mut self, shape: &Shape, color: [f64; 3], texture: f64, rng: &mut Rng) {
        let phase = rng.range(0.0, 6.3);
        let freq = rng.range(0.05, 0.2);
        for i in 0..self.h * self.w {
            let (x, y) = ((i % self.w) as f64 + 0.5, (i / self.w) as f64 + 0.5);
            let r = shape.rho(x, y);
            if r < 1.15 {
                // soft boundary over the outer 15 %, fully inside below 1
                let a = if r < 1.0 {
                    1.0
                } else {
                    (1.15 - r) / 0.15 * 0.5
                };
                let t = 1.0 + texture * ((x * freq + phase).sin() * (y * freq * 0.7 + phase).cos());
                for (p, col) in self.px[i].iter_mut().zip(color) {
                    *p = *p * (1.0 - a) + col * t * a;
                }
            }
        }
    }

    fn noise(&mut self, sigma: f64, speckle: bool, rng: &mut Rng) {
        for p in &mut self.px {
            let n = rng.normal() * sigma;
            for c in p.iter_mut() {
                *c = if speckle {
                    *c * (1.0 + n / 60.0).max(0.0)
                } else {
                    *c + n
                };
            }
        }
    }

    fn vignette(&mut self, strength: f64) {
        let (cx, cy) = (self.w as f64 / 2.0, self.h as f64 / 2.0);
        let r = cx.min(cy);
        for i in 0..self.h * self.w {
            let (x, y) = ((i % self.w) as f64, (i / self.w) as f64);
            let d = (((x - cx).powi(2) + (y - cy).powi(2)).sqrt() / r).min(1.5);
            let f = 1.0 - strength * d * d;
            for c in self.px[i].iter_mut() {
                *c *= f.max(0.0);
            }
        }
    }

    fn rgb(&self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|p| p.iter().map(|&v| v.round().clamp(0.0, 255.0) as u8))
            .collect()
    }
}

fn grey(v: f64) -> [f64; 3] {
    [v, v, v]
}

/// Generates phantom `index` of a seeded stream in `style`, `size x size` pixels.
pub fn phantom(style: Style, size: usize, seed: u64, index: u64) -> Phantom {
    let mut rng = Rng::for_item(seed, index.wrapping_mul(31).wrapping_add(style as u64));
    let (h, w) = (size, size);
    let s = size as f64;
    let j = |rng: &mut Rng, v: f64| v * (1.0 + rng.range(-0.08, 0.08));
    let contrast = rng.range(0.8, 1.2);
    let mut canvas;
    let mut parts: Vec<(String, Shape, [f64; 3], bool)> = Vec::new(); // (label, shape, colour, labelled)
    match style {
        Style::Ct => {
            canvas = Canvas::new(h, w, grey(5.0));
            let body = Shape::new(s * 0.5, s * 0.52, s * 0.44, s * 0.34, 0.03, &mut rng);
            parts.push(("body".into(), body, grey(95.0 * contrast), false));
            let liver = Shape::new(
                j(&mut rng, s * 0.35),
                j(&mut rng, s * 0.45),
                s * 0.17,
                s * 0.14,
                0.08,
                &mut rng,
            );
            parts.push(("liver".into(), liver.clone(), grey(140.0 * contrast), true));
            let spleen = Shape::new(
                j(&mut rng, s * 0.72),
                j(&mut rng, s * 0.4),
                s * 0.07,
                s * 0.1,
                0.08,
                &mut rng,
            );
            parts.push(("spleen".into(), spleen, grey(130.0 * contrast), true));
            // patient's left kidney appears on the image's right
            let rk = Shape::new(
                j(&mut rng, s * 0.38),
                j(&mut rng, s * 0.66),
                s * 0.05,
                s * 0.07,
                0.05,
                &mut rng,
            );
            parts.push(("right kidney".into(), rk, grey(165.0 * contrast), true));
            let lk = Shape::new(
                j(&mut rng, s * 0.64),
                j(&mut rng, s * 0.66),
                s * 0.05,
                s * 0.07,
                0.05,
                &mut rng,
            );
            parts.push(("left kidney".into(), lk, grey(165.0 * contrast), true));
            let aorta = Shape::new(s * 0.52, s * 0.6, s * 0.025, s * 0.025, 0.0, &mut rng);
            parts.push(("aorta".into(), aorta, grey(190.0 * contrast), true));
            if rng.next_f64() < 0.5 {
                let t = Shape::new(
                    liver.cx + rng.range(-0.05, 0.05) * s,
                    liver.cy,
                    s * 0.035,
                    s * 0.03,
                    0.15,
                    &mut rng,
                );
                parts.push(("liver tumor".into(), t, grey(100.0 * contrast), true));
            }
        }
        Style::Mr => {
            canvas = Canvas::new(h, w, grey(3.0));
            let head = Shape::new(s * 0.5, s * 0.5, s * 0.4, s * 0.46, 0.02, &mut rng);
            parts.push(("skull".into(), head, grey(60.0), false));
            let brain = Shape::new(s * 0.5, s * 0.5, s * 0.35, s * 0.41, 0.03, &mut rng);
            parts.push(("brain".into(), brain, grey(120.0 * contrast), true));
            if rng.next_f64() < 0.7 {
                let (cx, cy) = (j(&mut rng, s * 0.4), j(&mut rng, s * 0.42));
                let edema = Shape::new(cx, cy, s * 0.11, s * 0.09, 0.2, &mut rng);
                parts.push(("edema".into(), edema, grey(175.0 * contrast), true));
                let tumor = Shape::new(cx, cy, s * 0.05, s * 0.045, 0.15, &mut rng);
                parts.push(("tumor".into(), tumor, grey(215.0 * contrast), true));
            }
        }
        Style::Xray => {
            canvas = Canvas::new(h, w, grey(40.0));
            let chest = Shape::new(s * 0.5, s * 0.55, s * 0.42, s * 0.42, 0.02, &mut rng);
            parts.push(("chest".into(), chest, grey(170.0 * contrast), false));
            let rl = Shape::new(
                j(&mut rng, s * 0.33),
                s * 0.5,
                s * 0.13,
                s * 0.28,
                0.05,
                &mut rng,
            );
            parts.push(("right lung".into(), rl, grey(55.0), true));
            let ll = Shape::new(
                j(&mut rng, s * 0.67),
                s * 0.5,
                s * 0.12,
                s * 0.27,
                0.05,
                &mut rng,
            );
            parts.push(("left lung".into(), ll, grey(55.0), true));
            let heart = Shape::new(
                j(&mut rng, s * 0.55),
                s * 0.63,
                s * 0.11,
                s * 0.1,
                0.04,
                &mut rng,
            );
            parts.push(("heart".into(), heart, grey(200.0 * contrast), true));
        }
        Style::Ultrasound => {
            canvas = Canvas::new(h, w, grey(90.0));
            let nod = Shape::new(
                j(&mut rng, s * 0.5),
                j(&mut rng, s * 0.5),
                s * 0.12,
                s * 0.09,
                0.12,
                &mut rng,
            );
            parts.push(("thyroid nodule".into(), nod, grey(35.0), true));
        }
        Style::Endoscopy => {
            canvas = Canvas::new(h, w, [190.0, 95.0, 85.0]);
            let polyp = Shape::new(
                j(&mut rng, s * 0.55),
                j(&mut rng, s * 0.5),
                s * 0.14,
                s * 0.12,
                0.1,
                &mut rng,
            );
            parts.push((
                "polyp".into(),
                polyp,
                [225.0 * contrast, 140.0, 120.0],
                true,
            ));
        }
        Style::Fundus => {
            canvas = Canvas::new(h, w, grey(0.0));
            let eye = Shape::new(s * 0.5, s * 0.5, s * 0.46, s * 0.46, 0.0, &mut rng);
            parts.push(("retina".into(), eye, [200.0, 80.0, 30.0], false));
            let (cx, cy) = (j(&mut rng, s * 0.62), j(&mut rng, s * 0.5));
            let disc = Shape::new(cx, cy, s * 0.08, s * 0.085, 0.03, &mut rng);
            parts.push(("optic disc".into(), disc, [250.0, 200.0, 120.0], true));
            let cup = Shape::new(cx, cy, s * 0.035, s * 0.04, 0.05, &mut rng);
            parts.push(("optic cup".into(), cup, [255.0, 235.0, 190.0], true));
        }
        Style::Dermoscopy => {
            canvas = Canvas::new(h, w, [215.0, 170.0, 145.0]);
            let lesion = Shape::new(
                j(&mut rng, s * 0.5),
                j(&mut rng, s * 0.5),
                s * 0.2,
                s * 0.16,
                0.2,
                &mut rng,
            );
            parts.push((
                "skin lesion".into(),
                lesion,
                [110.0 * contrast, 70.0, 50.0],
                true,
            ));
        }
    }
    let mut masks = Vec::new();
    for (label, shape, color, labelled) in &parts {
        canvas.fill(shape, *color, 0.06, &mut rng);
        if *labelled {
            let m = shape.mask(h, w);
            if m.iter().any(|&b| b) {
                masks.push((label.clone(), m));
            }
        }
    }
    match style {
        Style::Ultrasound => canvas.noise(25.0, true, &mut rng),
        Style::Endoscopy | Style::Fundus => {
            canvas.vignette(0.35);
            canvas.noise(4.0, false, &mut rng)
        }
        _ => canvas.noise(6.0 * rng.range(0.5, 1.5), false, &mut rng),
    }
    Phantom {
        height: h,
        width: w,
        rgb: canvas.rgb(),
        masks,
        style,
    }
}

/// Writes `volumes` synthetic CT volumes of `size` x `size` x `depth` voxels as NIfTI
/// (`images/volNNN.nii.gz`, int16 HU) with label volumes of the same name (`masks/`, uint8),
/// made of CT-style phantom slices. For benchmarks and tests of the NIfTI path at realistic
/// sizes; returns the label value -> structure name table for a `Nifti` source.
pub fn write_ct_volumes(
    dir: &std::path::Path,
    volumes: usize,
    size: usize,
    depth: usize,
    seed: u64,
) -> Result<std::collections::BTreeMap<u16, String>, String> {
    use ndarray::Array3;
    let mut names: Vec<String> = Vec::new();
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for v in 0..volumes {
        let mut hu = Array3::<i16>::zeros((size, size, depth));
        let mut lab = Array3::<u8>::zeros((size, size, depth));
        for z in 0..depth {
            let p = phantom(Style::Ct, size, seed, (v * depth + z) as u64);
            for y in 0..size {
                for x in 0..size {
                    // Grey 0..255 spread over [-1000, 1040] HU.
                    hu[[x, size - 1 - y, z]] = p.rgb[(y * size + x) * 3] as i16 * 8 - 1000;
                }
            }
            for (name, m) in &p.masks {
                let value = match names.iter().position(|n| n == name) {
                    Some(i) => i + 1,
                    None => {
                        names.push(name.clone());
                        names.len()
                    }
                };
                let value = u8::try_from(value).map_err(|_| "more than 255 structures")?;
                for (i, _) in m.iter().enumerate().filter(|(_, b)| **b) {
                    lab[[i % size, size - 1 - i / size, z]] = value;
                }
            }
        }
        let name = format!("vol{v:03}.nii.gz");
        let img = dir.join("images").join(&name);
        nifti::writer::WriterOptions::new(&img)
            .write_nifti(&hu)
            .map_err(|e| format!("{}: {e}", img.display()))?;
        let msk = dir.join("masks").join(&name);
        nifti::writer::WriterOptions::new(&msk)
            .write_nifti(&lab)
            .map_err(|e| format!("{}: {e}", msk.display()))?;
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (i as u16 + 1, n))
        .collect())
}

#[cfg(test)]
mod tests;
