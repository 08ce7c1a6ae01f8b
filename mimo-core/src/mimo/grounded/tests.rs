use super::*;
use crate::rng::Rng;

fn seg(phrase: &str, s: usize, e: usize) -> ParsedSegment {
    ParsedSegment {
        phrase: Some(phrase.into()),
        char_span: Some((s, e)),
    }
}

const NONE: ParsedSegment = ParsedSegment {
    phrase: None,
    char_span: None,
};

#[test]
fn well_formed_answers() {
    let a = parse_grounded("It shows <p>the liver</p><SEG> and <p>a cyst</p> <SEG>.");
    assert_eq!(a.text, "It shows the liver and a cyst .");
    assert_eq!(
        a.segments,
        vec![seg("the liver", 9, 18), seg("a cyst", 23, 29)]
    );
    let a = parse_grounded("Sure, <SEG>.");
    assert_eq!(a.text, "Sure, .");
    assert_eq!(a.segments, vec![NONE]);
    // transformers 4.31's decode (a space around every added token) reads the same.
    let a = parse_grounded("It shows <p> the liver </p> <SEG> and <p> a cyst </p> <SEG> .");
    assert_eq!(a.text, "It shows the liver and a cyst .");
    assert_eq!(
        a.segments,
        vec![seg("the liver", 9, 18), seg("a cyst", 23, 29)]
    );
    // Characters, not bytes.
    let a = parse_grounded("Läsion: <p>Ödem</p><SEG>");
    assert_eq!(a.segments, vec![seg("Ödem", 8, 12)]);
}

#[test]
fn malformed_answers() {
    // </p> without <p>, phrase without <SEG>, text between </p> and <SEG>.
    let a = parse_grounded("a </p>b <p>c</p> d <SEG> <p>e</p>");
    assert_eq!(a.text, "a b c d e");
    assert_eq!(a.segments, vec![NONE]);
    // <SEG> inside an open phrase closes it; a reopened <p> restarts.
    let a = parse_grounded("<p>x <p>kidney<SEG></p>");
    assert_eq!(a.text, "x kidney");
    assert_eq!(a.segments, vec![seg("kidney", 2, 8)]);
    // An empty phrase grounds nothing; one phrase serves one <SEG>.
    let a = parse_grounded("<p> </p><SEG><p>y</p><SEG><SEG>");
    assert_eq!(a.segments, vec![NONE, seg("y", 1, 2), NONE]);
    assert_eq!(parse_grounded("").segments, vec![]);
}

/// Random mixes of markup, words, spaces and non-ASCII text: the parser never panics,
/// gives one segment per `<SEG>`, the plain text is the input without markup (one space
/// across a marker), and every
/// span points at its phrase in the plain text.
#[test]
fn property_random_markup() {
    let pieces = [
        "<p>", "</p>", "<SEG>", "liver", " ", "  ", "é", "腎", ".", "<", "p>", "SEG",
    ];
    let mut rng = Rng::new(7);
    for _ in 0..3000 {
        let n = (rng.next_f64() * 14.0) as usize;
        let raw: String = (0..n)
            .map(|_| pieces[(rng.next_f64() * pieces.len() as f64) as usize % pieces.len()])
            .collect();
        let a = parse_grounded(&raw);
        assert_eq!(a.segments.len(), raw.matches(SEG).count(), "{raw:?}");
        // The markers removed left to right (removing them can form new ones: "<" + "p>"),
        // and the whitespace after a marker dropped when the text already ends with some.
        let mut expect = String::new();
        let mut rest = raw.as_str();
        let mut trim = false;
        while !rest.is_empty() {
            if let Some(m) = [P_START, P_END, SEG].iter().find(|m| rest.starts_with(**m)) {
                rest = &rest[m.len()..];
                trim = expect.ends_with(char::is_whitespace);
            } else {
                let c = rest.chars().next().unwrap();
                if !(trim && c.is_whitespace()) {
                    expect.push(c);
                    trim = false;
                }
                rest = &rest[c.len_utf8()..];
            }
        }
        assert_eq!(a.text, expect, "{raw:?}");
        let chars: Vec<char> = a.text.chars().collect();
        for s in &a.segments {
            match (&s.phrase, s.char_span) {
                (Some(p), Some((b, e))) => {
                    assert!(b < e && e <= chars.len(), "{raw:?}");
                    assert_eq!(&chars[b..e].iter().collect::<String>(), p, "{raw:?}");
                    assert_eq!(p.trim(), p, "{raw:?}");
                }
                (None, None) => {}
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }
}
