//! When two names are the same name: uniqueness compares folded forms, so that look-alike
//! spellings of one name cannot be held by two users at once.
//!
//! A fold is `casefold(skeleton(NFKC(name)))` without invisible characters: NFKC makes
//! width and compatibility forms one (`ａｎｎ`, `ann`); the UTS #39 confusable skeleton
//! makes look-alike letters of other scripts one (Cyrillic `аnn`; `AI` and `Al`); case is
//! folded after it, as the skeleton is case-sensitive. Being case-sensitive, the skeleton
//! also sends one letter in two cases to different places (`I` to `l` but `i` to `i`, `m`
//! to `rn` but `M` to `M`), so one fold alone would take `UNIQUE` and `Unique` for two
//! names. A name therefore has up to three keys, the folds of it as written, in lower case
//! and in upper case, and two names are the same when they share a key.

use app::protocol::Username;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// One folded form of a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FoldedName(String);

impl FoldedName {
    fn fold(text: &str) -> Self {
        let visible: String = text.nfkc().filter(|c| !is_invisible(*c)).collect();
        Self(skeleton(&visible).filter(|c| !is_invisible(*c)).flat_map(char::to_lowercase).collect())
    }

    /// The folded form as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The keys that uniqueness compares a name by: two names are the same when they share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameKeys(Vec<FoldedName>);

impl NameKeys {
    /// The keys of `name`.
    pub fn of(name: &Username) -> Self {
        let name = name.as_str();
        let lower: String = name.chars().flat_map(char::to_lowercase).collect();
        let upper: String = name.chars().flat_map(char::to_uppercase).collect();
        let mut keys: Vec<FoldedName> = [name, &lower, &upper].into_iter().map(FoldedName::fold).collect();
        keys.sort();
        keys.dedup();
        Self(keys)
    }

    /// Each key.
    pub fn iter(&self) -> impl Iterator<Item = &FoldedName> {
        self.0.iter()
    }

    /// Whether the two names are one.
    pub fn shares_a_key(&self, other: &Self) -> bool {
        self.0.iter().any(|key| other.0.contains(key))
    }

    /// The keys in one string, one a line (names hold no control characters), as Redis
    /// keeps them.
    pub fn joined(&self) -> String {
        self.0.iter().map(FoldedName::as_str).collect::<Vec<_>>().join("\n")
    }
}

/// Characters that print as nothing, which would make two names look the same: Unicode's
/// default-ignorable code points (soft hyphen, zero-width and bidi marks, variation
/// selectors, Hangul fillers, tag characters, …).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        NameKeys::of(&Username::parse(a).unwrap()).shares_a_key(&NameKeys::of(&Username::parse(b).unwrap()))
    }

    #[test]
    fn case_width_composition_and_invisible_characters_do_not_count() {
        for other in ["zoe\u{308}", " ZOË ", "Ｚｏë", "Zo\u{200B}ë"] {
            assert!(same(other, "Zoë"), "{other:?}");
        }
        assert!(!same("Zoe", "Zoë"));
        for (a, b) in [("UNIQUE", "Unique"), ("BILL", "bill"), ("Kim", "KIM"), ("MIMI", "mimi")] {
            assert!(same(a, b), "{a} and {b} differ only in case");
        }
    }

    #[test]
    fn look_alikes_of_other_scripts_and_hidden_marks_are_one_name() {
        for other in [
            "\u{430}nn",       // Cyrillic a
            "ANN",             // case
            "ann\u{61C}",      // Arabic letter mark
            "ann\u{FE0F}",     // variation selector
            "ann\u{E0041}",    // tag character
            "a\u{3164}nn",     // Hangul filler
            "a\u{115F}nn",     // Hangul choseong filler
            "a\u{FFA0}nn",     // half-width Hangul filler
            "\u{391}\u{39D}N", // Greek capitals
        ] {
            assert!(same(other, "ann"), "{other:?}");
        }
        assert!(same("AI", "Al"), "capital I and small L");
        assert!(same("rn", "m"), "r n and m");
        assert!(!same("ann", "anna"));
        assert!(!same("bob", "rob"));
        assert!(!same("ann", "ian"));
    }

    proptest::proptest! {
        #[test]
        fn case_never_makes_two_names(raw in "\\PC{1,20}") {
            let Ok(name) = Username::parse(&raw) else { return Ok(()) };
            let keys = NameKeys::of(&name);
            proptest::prop_assert!(keys.shares_a_key(&keys));
            for other in [raw.to_uppercase(), raw.to_lowercase()] {
                if let Ok(other) = Username::parse(&other) {
                    proptest::prop_assert!(keys.shares_a_key(&NameKeys::of(&other)), "{:?} and {:?}", name, other);
                }
            }
        }

        #[test]
        fn invisible_characters_never_make_two_names(raw in "[a-zA-Z]{1,10}", at in 0usize..10, mark in 0usize..6) {
            let Ok(name) = Username::parse(&raw) else { return Ok(()) };
            let hidden = ['\u{200B}', '\u{FE0F}', '\u{E0041}', '\u{3164}', '\u{061C}', '\u{2060}'][mark];
            let mut marked: Vec<char> = raw.chars().collect();
            marked.insert(at.min(marked.len()), hidden);
            let marked: String = marked.into_iter().collect();
            if let Ok(other) = Username::parse(&marked) {
                proptest::prop_assert!(NameKeys::of(&name).shares_a_key(&NameKeys::of(&other)), "{:?}", marked);
            }
        }
    }
}
