//! When two names are the same name: uniqueness compares folded forms, so that look-alike
//! spellings of one name cannot be held by two users at once.
//!
//! The fold is `casefold(skeleton(NFKC(name)))` without invisible characters: NFKC makes
//! width and compatibility forms one (`ａｎｎ`, `ann`); the UTS #39 confusable skeleton
//! makes look-alike letters of other scripts one (Cyrillic `аnn`, `AI` and `Al`); the
//! skeleton is case-sensitive, so case is folded after it.

use app::protocol::Username;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// The form of a name that uniqueness compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FoldedName(String);

impl FoldedName {
    /// The folded form of `name`.
    pub fn of(name: &Username) -> Self {
        let visible: String = name.as_str().nfkc().filter(|c| !is_invisible(*c)).collect();
        Self(skeleton(&visible).filter(|c| !is_invisible(*c)).flat_map(char::to_lowercase).collect())
    }

    /// The folded form as stored.
    pub fn as_str(&self) -> &str {
        &self.0
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

    fn fold(raw: &str) -> FoldedName {
        FoldedName::of(&Username::parse(raw).unwrap())
    }

    #[test]
    fn case_width_composition_and_invisible_characters_do_not_count() {
        for same in ["zoe\u{308}", " ZOË ", "Ｚｏë", "Zo\u{200B}ë"] {
            assert_eq!(fold(same), fold("Zoë"), "{same:?}");
        }
        assert_ne!(fold("Zoe"), fold("Zoë"));
    }

    #[test]
    fn look_alikes_of_other_scripts_and_hidden_marks_are_one_name() {
        for same in [
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
            assert_eq!(fold(same), fold("ann"), "{same:?}");
        }
        assert_eq!(fold("AI"), fold("Al"), "capital I and small L");
        assert_ne!(fold("ann"), fold("anna"));
        assert_ne!(fold("bob"), fold("rob"));
    }
}
